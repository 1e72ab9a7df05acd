"""Answers FreeSWITCH mod_xml_curl directory lookups from Redis; gRPC CRUD for its data."""
