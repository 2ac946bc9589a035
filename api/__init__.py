"""spyglass.api"""
