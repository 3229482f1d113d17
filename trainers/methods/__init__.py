"""Methods: one file each, behind the interface in base.py; registry.py names them."""
