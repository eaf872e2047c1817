"""p2psync: a peer-to-peer sync daemon for home networks.

Every device keeps a replica of the household's records; paired devices exchange signed
transaction logs over mutually authenticated TLS and merge them with version vectors.
"""

__version__ = "0.5.0"
