"""What the API (backend) and the worker share: run and attribution configurations, presets,
NIfTI I/O, the merge of corrections, memory estimates and brain masks.

Torch-free by rule (tests/test_layering.py): numpy, scipy, nibabel, scikit-image and pydantic
only, so that the API can import it without the training stack.
"""
