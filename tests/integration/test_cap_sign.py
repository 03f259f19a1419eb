"""XML signatures of CAP against a real engine: an office with a CAP certificate has its
messages verified against that certificate (and only it), unsigned, foreign-signed, altered and
wrapped messages refused with the check that failed; the engine's own CAP signed with its key,
valid against the schema, verifiable with signxml and importable where our certificate is
trusted. The real signed samples are checked against their own certificates."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from lxml import etree  # type: ignore[import-untyped]  # no hints shipped (lxml-stubs apart)
from signxml.verifier import SignatureConfiguration, XMLVerifier

from dispatcher.core.auth import hash_token
from dispatcher.core.cap_schema import CAP_NS, DSIG_NS, CapError, read_cap, read_valid_cap
from dispatcher.core.cap_sign import CapSignatureError, CapSigner, verify
from dispatcher.core.config import OfficeConfig
from dispatcher.core.errors import ConfigError
from dispatcher.http import cap as cap_routes
from tests.helpers import OFFICES, ROOT, unique
from tests.integration.engine import GULOU, PROVINCE, Client, issue
from tests.integration.test_cap_api import cap_doc, error_of, post_cap

SAMPLES = ROOT / "tests" / "data" / "cap"
DS = f"{{{DSIG_NS}}}"
N = f"{{{CAP_NS}}}"


@dataclass
class Pki:
    """A self-signed certificate and its key, also as PEM files."""

    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    key_file: Path
    certificate_file: Path

    @property
    def signer(self) -> CapSigner:
        return CapSigner(self.key, self.certificate)


def make_pki(folder: Path, name: str, *, kind: str = "rsa") -> Pki:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind == "rsa"
        else ec.generate_private_key(ec.SECP256R1())
    )
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=2))
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    key_file, certificate_file = folder / f"{name}.key", folder / f"{name}.crt"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    certificate_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return Pki(key, certificate, key_file, certificate_file)


@pytest.fixture
def engine_pki(tmp_path: Path) -> Pki:
    """The engine's signing key, also the certificate office fz-gulou's CAP must be signed
    with: our own output re-imports there."""
    return make_pki(tmp_path / "pki", "ebd-engine")


@pytest.fixture
def engine_overrides(engine_pki: Pki) -> dict[str, Any]:
    offices = [
        {
            "id": oid,
            "name": name,
            "region": region,
            "token_sha256": hash_token(token),
            "machine_approved": True,
            **({"cap_certificate": str(engine_pki.certificate_file)} if oid == "fz-gulou" else {}),
        }
        for token, (oid, name, region) in OFFICES.items()
    ]
    return {
        "offices": offices,
        "cap_signing_key": str(engine_pki.key_file),
        "cap_signing_certificate": str(engine_pki.certificate_file),
    }


def signature_error(status: int, body: dict[str, Any]) -> str:
    error = error_of(status, body, 422)
    assert error["code"] == "cap_signature", error
    return str(error["message"])


# --- verify ---------------------------------------------------------------------------------


async def test_a_message_signed_by_the_offices_key_is_imported(
    api: Client, engine_pki: Pki
) -> None:
    data = engine_pki.signer.sign(cap_doc(unique("signed")))
    status, body = await post_cap(api, data, GULOU)
    assert status == 201, body
    assert body["sender"] == "fz-gulou"


async def test_an_unsigned_message_from_an_office_with_a_certificate_is_refused(
    api: Client,
) -> None:
    status, body = await post_cap(api, cap_doc(unique("unsigned")), GULOU)
    message = signature_error(status, body)
    assert "office fz-gulou requires CAP messages signed" in message
    assert "no XML signature" in message
    # Offices without a certificate take it as before.
    status, body = await post_cap(api, cap_doc(unique("unsigned")), PROVINCE)
    assert status == 201, body


async def test_a_message_signed_by_another_key_is_refused(api: Client, tmp_path: Path) -> None:
    # Its own certificate travels in KeyInfo: it is not trusted, the office's is.
    other = make_pki(tmp_path / "other", "intruder")
    status, body = await post_cap(api, other.signer.sign(cap_doc(unique("other"))), GULOU)
    message = signature_error(status, body)
    assert "does not verify with this certificate" in message
    assert "CN=ebd-engine" in message  # the certificate it was checked against


async def test_a_message_changed_after_signing_is_refused(api: Client, engine_pki: Pki) -> None:
    signed = engine_pki.signer.sign(cap_doc(unique("changed")))
    headline = "福州市气象台发布台风红色预警信号".encode()
    changed = signed.replace(headline, "福州市气象台解除台风预警".encode())
    assert changed != signed
    status, body = await post_cap(api, changed, GULOU)
    assert "changed after it was signed" in signature_error(status, body)


def _rewrap(signed: bytes, *, uri: str) -> bytes:
    """A wrapping attack: the signed alert moved into the signature's ds:Object (Id "orig"),
    the document's own alert rewritten (headline, severity), the reference pointed at ``uri``."""
    root = etree.fromstring(signed)
    signature = root.find(f"{DS}Signature")
    original = etree.fromstring(signed)
    original.remove(original.find(f"{DS}Signature"))
    obj = etree.SubElement(signature, f"{DS}Object", Id="orig")
    obj.append(original)
    root.find(f"{N}info/{N}headline").text = "伪造：解除全部预警"
    root.find(f"{N}info/{N}severity").text = "Minor"
    signature.find(f"{DS}SignedInfo/{DS}Reference").set("URI", uri)
    out: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return out


async def test_signature_wrapping_is_refused(api: Client, engine_pki: Pki) -> None:
    signed = engine_pki.signer.sign(cap_doc(unique("wrapped")))
    # The reference to the moved original by its Id: refused by its shape, before any crypto.
    status, body = await post_cap(api, _rewrap(signed, uri="#orig"), GULOU)
    message = signature_error(status, body)
    assert "URI='#orig'" in message
    assert 'only URI="" (the whole document)' in message
    # The whole document still referenced: the rewritten alert no longer matches the digest.
    status, body = await post_cap(api, _rewrap(signed, uri=""), GULOU)
    assert "changed after it was signed" in signature_error(status, body)
    # A second signature nested in the first (a signed alert carried inside): refused.
    root = etree.fromstring(signed)
    inner = etree.fromstring(signed)
    obj = etree.SubElement(root.find(f"{DS}Signature"), f"{DS}Object")
    obj.append(inner.find(f"{DS}Signature"))
    status, body = await post_cap(api, etree.tostring(root), GULOU)
    assert "not a child of <alert>" in signature_error(status, body)


def test_a_signature_that_is_not_enveloped_is_refused_before_crypto(tmp_path: Path) -> None:
    pki = make_pki(tmp_path, "shape", kind="ec")
    signed = pki.signer.sign(cap_doc(unique("shape")))
    root = etree.fromstring(signed)
    transforms = root.find(f"{DS}Signature/{DS}SignedInfo/{DS}Reference/{DS}Transforms")
    for transform in list(transforms):
        if transform.get("Algorithm", "").endswith("enveloped-signature"):
            transforms.remove(transform)
    unenveloped = etree.tostring(root)
    with pytest.raises(CapSignatureError, match="lacks the enveloped-signature transform"):
        verify(read_valid_cap(unenveloped), unenveloped, pki.certificate, office="x")


# --- sign -----------------------------------------------------------------------------------


async def test_our_cap_is_signed_schema_valid_verifiable_and_reimportable(
    api: Client, engine_pki: Pki
) -> None:
    headline = unique("鼓楼区暴雨红色预警")
    alert_id = await issue(api, PROVINCE, headline=headline, areas=["350102"])
    response = await api.get(f"/api/v1/alerts/{alert_id}.cap", headers=PROVINCE)
    assert response.status == 200
    data = await response.read()
    doc = read_valid_cap(data)  # the schema takes the trailing ds:Signature
    assert [child.tag for child in doc.root][-1] == f"{DS}Signature"
    result: Any = XMLVerifier().verify(
        data, x509_cert=engine_pki.certificate, expect_config=_one_reference()
    )
    assert result.signed_xml.find(f"{N}identifier").text == alert_id
    cert_text = doc.root.find(f"{DS}Signature/{DS}KeyInfo/{DS}X509Data/{DS}X509Certificate")
    assert cert_text is not None
    assert cert_text.text is not None
    embedded = x509.load_der_x509_certificate(base64.b64decode("".join(cert_text.text.split())))
    assert embedded == engine_pki.certificate
    # The ETag is of the signed bytes, which stay the same (RSA): 304 to it.
    again = await api.get(f"/api/v1/alerts/{alert_id}.cap", headers=PROVINCE)
    assert await again.read() == data
    etag = response.headers["ETag"]
    cached = await api.get(
        f"/api/v1/alerts/{alert_id}.cap", headers={**PROVINCE, "If-None-Match": etag}
    )
    assert cached.status == 304
    # fz-gulou trusts our certificate: our signed CAP imports there as a message of its own.
    status, body = await post_cap(api, data, GULOU)
    assert status == 201, body
    assert body["cap"]["identifier"] == alert_id
    assert body["headline"] == headline


def _one_reference() -> SignatureConfiguration:
    return SignatureConfiguration(location="./", expect_references=1)


def test_an_ecdsa_signature_verifies_and_the_schema_takes_it(tmp_path: Path) -> None:
    pki = make_pki(tmp_path, "ec-engine", kind="ec")
    data = cap_doc(unique("ec"))
    signed = pki.signer.sign(data)
    verify(read_valid_cap(signed), signed, pki.certificate, office="x")
    signature = read_cap(signed).root.find(f"{DS}Signature/{DS}SignedInfo/{DS}SignatureMethod")
    assert signature is not None
    assert signature.get("Algorithm", "").endswith("ecdsa-sha256")


# --- configuration --------------------------------------------------------------------------


def test_a_bad_certificate_file_stops_the_start_naming_office_and_path(tmp_path: Path) -> None:
    bad = tmp_path / "gulou.crt"
    bad.write_text("not a certificate\n")
    office = OfficeConfig(
        id="fz-gulou",
        name="鼓楼区应急管理局",
        region="350102",
        token_sha256=hash_token("t"),
        cap_certificate=bad,
    )
    with pytest.raises(ConfigError) as caught:
        cap_routes.setup(web.Application(), "ebd.local", offices=[office])
    assert "office fz-gulou" in caught.value.message
    assert str(bad) in caught.value.message
    assert "offices[0].cap_certificate" in caught.value.message
    missing = office.model_copy(update={"cap_certificate": tmp_path / "none.crt"})
    with pytest.raises(ConfigError, match=r"none\.crt"):
        cap_routes.setup(web.Application(), "ebd.local", offices=[missing])


def test_a_signing_key_without_its_certificate_or_not_matching_it_stops_the_start(
    tmp_path: Path,
) -> None:
    one, two = make_pki(tmp_path, "one"), make_pki(tmp_path, "two")
    with pytest.raises(ConfigError, match="both cap_signing_key and cap_signing_certificate"):
        cap_routes.setup(web.Application(), "ebd.local", signing_key=one.key_file)
    with pytest.raises(ConfigError, match="not the signing key's"):
        cap_routes.setup(
            web.Application(),
            "ebd.local",
            signing_key=one.key_file,
            signing_certificate=two.certificate_file,
        )


# --- the real signed samples ----------------------------------------------------------------


def _embedded_certificates(root: ET.Element) -> list[x509.Certificate]:
    found = []
    for signature in root.findall(f"{DS}Signature"):
        text = signature.findtext(f".//{DS}X509Certificate") or ""
        found.append(x509.load_der_x509_certificate(base64.b64decode("".join(text.split()))))
    return found


def test_the_naads_sample_verifies_with_its_issuers_certificate_and_no_other(
    tmp_path: Path,
) -> None:
    """Pelmorex NAADS, CAP 1.2, signed by Environment Canada and by NAADS (RSA-SHA256, Ids
    with spaces). Environment Canada's signature verifies, checked when its certificate was
    valid; NAADS's own does not (the sample's SignedInfo was reformatted when it was copied),
    so trusting NAADS's certificate refuses it; another certificate refuses it."""
    data = (SAMPLES / "tannerryan-PelmorexNAADS_WindWarning.xml").read_bytes()
    doc = read_valid_cap(data)
    naads, environment_canada = _embedded_certificates(doc.root)
    at = environment_canada.not_valid_before_utc + timedelta(days=1)
    verify(doc, data, environment_canada, office="naads", at=at)
    with pytest.raises(CapSignatureError, match=r"signature 1: .*signature 2: "):
        verify(doc, data, naads, office="naads", at=naads.not_valid_before_utc + timedelta(1))
    other = make_pki(tmp_path, "other").certificate
    with pytest.raises(CapSignatureError, match="does not verify with this certificate"):
        verify(doc, data, other, office="naads")
    # Today the certificate has long expired: refused as such, once.
    with pytest.raises(CapSignatureError, match=r"office naads's CAP certificate .* not valid"):
        verify(doc, data, environment_canada, office="naads")


def test_the_sha1_signed_canada_sample_is_refused_for_sha1() -> None:
    data = (SAMPLES / "google-canada_signed.cap.xml").read_bytes()
    doc = read_valid_cap(data)
    certificate = _embedded_certificates(doc.root)[1]
    with pytest.raises(CapSignatureError, match="SHA1 forbidden"):
        verify(doc, data, certificate, office="ec", at=certificate.not_valid_before_utc)


def test_the_signed_earthquake_sample_is_refused_as_cap_1_1_before_any_signature() -> None:
    with pytest.raises(CapError, match=r"this is CAP 1\.1"):
        read_cap((SAMPLES / "google-earthquake_signed.cap.xml").read_bytes())
