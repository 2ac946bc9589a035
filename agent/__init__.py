"""spyglass.agent"""
