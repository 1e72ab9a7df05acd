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
    """``length`` uniformly random characters of the alphabet (one CSPRNG draw, so a batch
    of 10,000 stays cheap): 16 characters carry ~95 bits."""
    base = len(PASSWORD_ALPHABET)
    number = secrets.randbelow(base**length)
    characters = []
    for _ in range(length):
        number, digit = divmod(number, base)
        characters.append(PASSWORD_ALPHABET[digit])
    return "".join(characters)


def a1_hash(user: str, realm: str, password: str) -> str:
    """``md5(user:realm:password)`` as sofia compares it (realm = the SIP domain)."""
    return hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()


def secret_params(user: str, domain: str, password: str, store_a1_hash: bool) -> dict[str, str]:
    """The params that carry ``password``: the clear text, or only its a1-hash."""
    if store_a1_hash:
        return {A1_HASH: a1_hash(user, domain, password)}
    return {PASSWORD: password}
