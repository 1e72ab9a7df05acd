"""Generated passwords and the digest ``a1-hash`` FreeSWITCH accepts instead of a password."""

from __future__ import annotations

import hashlib
import secrets
import string

PASSWORD_ALPHABET = string.ascii_letters + string.digits
"""Letters and digits only: typed on phone keypads and provisioning forms without escaping."""
GENERATED_LENGTH = 16
PASSWORD = "password"
A1_HASH = "a1-hash"
SECRET_PARAMS = (PASSWORD, A1_HASH)


def generate_password(length: int = GENERATED_LENGTH) -> str:
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(length))


def a1_hash(user: str, realm: str, password: str) -> str:
    """``md5(user:realm:password)`` as sofia compares it (realm = the SIP domain)."""
    return hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()


def secret_params(user: str, domain: str, password: str, store_a1_hash: bool) -> dict[str, str]:
    """The params that carry ``password``: the clear text, or only its a1-hash."""
    if store_a1_hash:
        return {A1_HASH: a1_hash(user, domain, password)}
    return {PASSWORD: password}
