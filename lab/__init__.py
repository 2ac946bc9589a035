"""spyglass.lab"""
