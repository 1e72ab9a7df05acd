"""The xml_curl lookup path: HTTP request -> cached domain view -> XML answer."""
