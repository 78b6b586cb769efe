"""Research experiments of method.md section 6 (one module per axis)."""
