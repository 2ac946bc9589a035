"""spyglass.model"""
