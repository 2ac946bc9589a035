"""spyglass.ui"""
