import pytest

from icdcoder.errors import IcdcoderError
from icdcoder.ontology.systems import Code, is_well_formed, normalize_code, parse_system


@pytest.mark.parametrize(
    ("system", "raw", "expected"),
    [
        ("icd9cm-dx", "4019", "401.9"),
        ("icd9cm-dx", "E8497", "E849.7"),
        ("icd9cm-dx", "V5861", "V58.61"),
        ("icd9cm-dx", "428", "428"),
        ("icd9cm-proc", "9604", "96.04"),
        ("icd9cm-proc", "3722", "37.22"),
        ("icd10cm", "n44.8", "N44.8"),
        ("icd10cm", "R0789", "R07.89"),
        ("icd10pcs", "bw03", "BW03"),
        ("icd10pcs", "0dtj4zz", "0DTJ4ZZ"),
    ],
)
def test_normalize_code(system: str, raw: str, expected: str) -> None:
    assert normalize_code(system, raw) == expected
    assert is_well_formed(system, expected)


def test_undotted_collision_is_kept_apart_by_system() -> None:
    dx, proc = Code.of("icd9cm-dx", "9604"), Code.of("icd9cm-proc", "9604")
    assert dx.key == "icd9cm-dx:960.4"
    assert proc.key == "icd9cm-proc:96.04"
    assert Code.parse(proc.key) == proc


def test_unknown_system_names_the_choices() -> None:
    with pytest.raises(IcdcoderError, match="icd9cm-dx, icd9cm-proc, icd10cm, icd10pcs"):
        parse_system("icd11")
    with pytest.raises(IcdcoderError, match="lacks its code system"):
        Code.parse("N44.8")
