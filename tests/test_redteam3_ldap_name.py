"""Red team 3: the LDAP user-name check (README "LDAP": letters, digits and ``. _ - @``
only, before the directory sees a name).

Its pattern ended in ``$``, which also matches before a final newline: "lara\\n" passed
the check.  The EAS and account-page paths strip the name first, but an entry's RDN
value (``_rdn_name``: the local record's name after a search) did not, so a directory
entry ``uid=lara\\n`` would have made a local user "lara\\n" beside "lara".
"""

from __future__ import annotations

import pytest

from easync.auth.ldap import BadUserName, check_name


@pytest.mark.parametrize("name", ["lara\n", "lara\r\n", "\nlara", "la\nra"])
def test_a_line_break_is_never_part_of_a_directory_name(name: str) -> None:
    with pytest.raises(BadUserName):
        check_name(name)


def test_plain_names_pass() -> None:
    assert check_name("lara.rossi@example.org") == "lara.rossi@example.org"
