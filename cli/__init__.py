"""spyglass.cli"""
