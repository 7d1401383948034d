"""Fail the image build when a stripped C extension no longer loads.

Several libraries fall back to pure Python silently when their compiled module
fails to import, so "import works" would not catch a damaged extension.
"""

import aiohttp.http_parser
import frozenlist
import multidict
import propcache
import sqlalchemy.util
import yaml

sqlalchemy.util.has_compiled_ext(raise_=True)
checks = {
    "PyYAML libyaml": yaml.__with_libyaml__,
    "aiohttp parser": aiohttp.http_parser.HttpRequestParser.__module__
    == "aiohttp._http_parser",
    "multidict": multidict.MultiDict.__module__ == "multidict._multidict",
    "frozenlist": frozenlist.FrozenList.__module__ == "frozenlist._frozenlist",
    "propcache": propcache.under_cached_property.__module__ == "propcache._helpers_c",
}
broken = [name for name, ok in checks.items() if not ok]
if broken:
    raise SystemExit(f"compiled extensions not in use: {', '.join(broken)}")
print("compiled extensions load:", ", ".join(checks))
