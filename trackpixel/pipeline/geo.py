"""Country lookup from the anonymised IP, with the GeoLite2-derived data that geoip2fast ships.

The lookup uses only the stored /24 or /48 network, which is enough to place an address in
a country. Nothing is downloaded at run time; the data is as fresh as the installed package.
"""

from __future__ import annotations

from functools import lru_cache

from geoip2fast import GeoIP2Fast

_reader: GeoIP2Fast | None = None


def _get_reader() -> GeoIP2Fast:
    global _reader
    if _reader is None:
        # This data file holds both IPv4 and IPv6 networks.
        _reader = GeoIP2Fast(geoip2fast_data_file="geoip2fast-ipv6.dat.gz", verbose=False)
    return _reader


@lru_cache(maxsize=65_536)
def country_of(ip_anon: str | None) -> str | None:
    """Return the ISO 3166-1 alpha-2 code for an anonymised address, or None if unknown."""
    if not ip_anon:
        return None
    code = _get_reader().lookup(ip_anon).country_code
    if not code or len(code) != 2 or not code.isalpha():
        return None
    return str(code).upper()
