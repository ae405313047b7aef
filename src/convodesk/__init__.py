"""convodesk: a self-hosted contact-center messaging service for the Sinch Conversation API."""

__version__ = "0.1.0"
