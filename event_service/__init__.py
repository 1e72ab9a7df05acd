"""Keeps FreeSWITCH registration and call state in Redis from its event socket."""
