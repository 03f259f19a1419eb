"""``ebd config check`` warns of what a config sets up but leaves off: drills with nobody to
issue them, SMS settings without a gateway; a complete config gets no warning."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.cli.main import main
from dispatcher.core.auth import hash_token
from tests.helpers import FUJIAN_FILE, office_toml, write_text

REGIONS = f'[regions]\nfile = "{FUJIAN_FILE}"\n\n'
COUNTY = office_toml("fz-gulou", "350102", hash_token("tok-gulou"))
PROVINCE = office_toml("fj-province", "35", hash_token("tok-province"))
DRILLS = "[drills]\nmax_per_county_per_day = 3\n\n"


def check(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> list[str]:
    path = write_text(tmp_path, "ebd.toml", text)
    assert main(["config", "check", "--config", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{path}: OK")
    return [line for line in out if line.startswith("warning: ")]


def test_drills_configured_without_a_drill_office_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (warning,) = check(tmp_path, capsys, REGIONS + DRILLS + COUNTY)
    assert "[drills] is configured but drills are off" in warning
    assert "[drills]" in warning
    assert 'office = "ID"' in warning


@pytest.mark.parametrize(
    "text",
    [
        REGIONS + DRILLS + PROVINCE,  # the province office issues them
        REGIONS + '[drills]\noffice = "fz-gulou"\n\n' + COUNTY,  # the named office does
        REGIONS + COUNTY,  # drills not configured: nothing to warn of
    ],
    ids=["province", "named-office", "not-configured"],
)
def test_no_warning_when_drills_can_run_or_are_not_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    assert check(tmp_path, capsys, text) == []


def test_sms_settings_without_a_gateway_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = REGIONS + '[sms]\nescalation_roles = ["village_head"]\n\n' + PROVINCE
    (warning,) = check(tmp_path, capsys, text)
    assert "[sms] sets escalation_roles but has no [[sms.gateways]]" in warning
