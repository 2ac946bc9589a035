"""spyglass.bpf"""
