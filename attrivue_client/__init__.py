"""Python client and CLI (``attrivue-client``) for the Attrivue REST API.

Imports nothing from the server (``backend``, ``worker``): it is what a script on another
machine installs and uses.
"""

from attrivue_client.client import DEFAULT_URL, ApiError, Client, load_config, read_manifest

__all__ = ["DEFAULT_URL", "ApiError", "Client", "load_config", "read_manifest"]
