"""Pydantic v2 schemas, a family per resource: XCreate, XPublic, XsPublic."""
