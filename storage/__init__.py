"""spyglass.storage"""
