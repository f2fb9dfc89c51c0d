"""RSA key pairs with a public exponent other than 65537 or 3 (SignServer's ``2048exp5``).

``cryptography`` (OpenSSL) only generates keys with e = 65537 or e = 3, yet SignServer's
``KEYSPEC`` accepts any odd exponent and existing configurations use it. No maintained Python
library in our dependencies does this, so the primes are found here (random candidates with
the two top bits set, trial division, then 64 Miller-Rabin rounds with random bases, following
FIPS 186-4 B.3.3's conditions) and the key is built with ``cryptography``, which validates it.
Only this uncommon case uses this module; e = 65537 and e = 3 keys come from OpenSSL.
"""

from __future__ import annotations

import math
import secrets

from cryptography.hazmat.primitives.asymmetric import rsa

_SMALL_PRIMES = [p for p in range(3, 2000) if all(p % d for d in range(2, int(p**0.5) + 1))]
_MILLER_RABIN_ROUNDS = 64  # error probability below 2^-128 for any candidate


def _is_probable_prime(n: int) -> bool:
    if n < 2:
        return False
    for p in _SMALL_PRIMES:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for _ in range(_MILLER_RABIN_ROUNDS):
        a = secrets.randbelow(n - 3) + 2
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(bits: int, e: int) -> int:
    while True:
        # Top two bits set: the product of two such primes has exactly 2 * bits bits.
        candidate = secrets.randbits(bits) | (0b11 << (bits - 2)) | 1
        if math.gcd(candidate - 1, e) == 1 and _is_probable_prime(candidate):
            return candidate


def generate_rsa_key(bits: int, e: int) -> rsa.RSAPrivateKey:
    """A new RSA key of ``bits`` bits with public exponent ``e`` (odd, at least 3)."""
    if e < 3 or e % 2 == 0:
        raise ValueError("the public exponent must be odd and at least 3")
    half = bits // 2
    while True:
        p, q = _prime(half, e), _prime(bits - half, e)
        if abs(p - q) <= 1 << (half - 100):  # FIPS 186-4: p and q must not be close
            continue
        n = p * q
        if n.bit_length() != bits:
            continue
        d = pow(e, -1, math.lcm(p - 1, q - 1))
        if d <= 1 << half:  # FIPS 186-4: a small private exponent is unsafe
            continue
        numbers = rsa.RSAPrivateNumbers(
            p=p, q=q, d=d, dmp1=d % (p - 1), dmq1=d % (q - 1), iqmp=pow(q, -1, p),
            public_numbers=rsa.RSAPublicNumbers(e, n),
        )
        return numbers.private_key()  # cryptography checks the key's consistency
