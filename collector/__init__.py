"""spyglass.collector"""
