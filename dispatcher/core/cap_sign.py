"""XML signatures (XML-DSig) of CAP 1.2 documents, with ``signxml``: the signature of a linked
release system verified against the certificate configured for its office, and the engine's
own CAP output signed with its key.

Pure: bytes and certificates in, bytes out or a ``CapSignatureError`` naming the check that
failed. What is accepted, and why:

- only **enveloped** signatures over the **whole document**: each ``ds:Signature`` a child of
  ``<alert>`` (where CAP's schema puts it), one ``Reference`` with ``URI=""`` and the
  enveloped-signature transform. Anything else (a signature deeper in the tree, a reference to
  an ``Id``, several references) is refused before any cryptography: those are the shapes of
  signature-wrapping attacks, and no CAP sender needs them;
- the key is the **configured certificate's** (``x509_cert=`` pinned); a certificate in the
  message's ``KeyInfo`` is ignored, never trusted (a ``KeyValue`` there must match the pinned
  key: signxml refuses the ambiguity);
- SHA-1 signatures and digests are refused (signxml's default); the certificate must be valid
  now;
- a message may carry several signatures (NAADS: the distributor's and the issuer's); each is
  checked on the document without the others (each signer signed the message, not the other
  signatures), and one that verifies with the configured certificate is enough;
- what was verified is compared, element by element, with the tree the importer reads (the
  defused, schema-checked one): the verifier's parser (libxml2) and ours (expat) must have seen
  the same document.

Parsing for verification happens only after ``cap_schema`` read the bytes safely (no DOCTYPE,
no entity) and the schema passed. The parser given to signxml is lxml's with entities not
resolved, no DTD loaded, no network and no huge trees; signxml itself also refuses any DTD or
entity in what it parses (``XMLProcessor._fromstring``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from lxml import etree  # type: ignore[import-untyped]  # no hints shipped (lxml-stubs apart)
from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod
from signxml.exceptions import InvalidCertificate, InvalidDigest, InvalidInput, SignXMLException
from signxml.signer import XMLSigner
from signxml.verifier import SignatureConfiguration, XMLVerifier

from dispatcher.core.cap_schema import CAP_NS, DSIG_NS, CapDocument
from dispatcher.core.errors import ValidationFailed

_DS = f"{{{DSIG_NS}}}"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
# A message signed by more than this many parties is not a CAP message anyone sends.
MAX_SIGNATURES = 4


class CapSignatureError(ValidationFailed, code="cap_signature"):
    """The CAP message's XML signature is missing, not of the accepted form, or does not
    verify with the office's certificate (HTTP 422); the message says which check failed."""


def _parser() -> etree.XMLParser:
    # What lxml's FAQ recommends for untrusted input, and no comments: they are not signed
    # under the usual canonicalisations.
    return etree.XMLParser(resolve_entities=False, load_dtd=False, no_network=True, huge_tree=False)


def load_certificate(pem: bytes) -> x509.Certificate:
    """A PEM X.509 certificate; ``ValueError`` saying what is wrong with it."""
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise ValueError(f"not a PEM X.509 certificate ({exc})") from exc


def describe(certificate: x509.Certificate) -> str:
    """Subject and serial: how a message names a certificate to an operator."""
    return f"{certificate.subject.rfc4514_string()} (serial {certificate.serial_number:x})"


# --- verify ---------------------------------------------------------------------------------


def verify(
    doc: CapDocument,
    data: bytes,
    certificate: x509.Certificate,
    *,
    office: str,
    at: datetime | None = None,
) -> None:
    """Check that ``data`` (already read into ``doc`` by ``cap_schema``, schema-valid) carries an
    enveloped signature over the whole document by ``certificate``'s key; ``CapSignatureError``
    naming the failed check otherwise. ``at``: the time the certificate must be valid at (now
    by default; the tests of old real messages give their sent time)."""
    signatures = list(doc.root.iter(f"{_DS}Signature"))
    if not signatures:
        raise CapSignatureError(
            f"office {office} requires CAP messages signed by its certificate "
            f"{describe(certificate)}; this one has no XML signature (ds:Signature)",
            details=[{"field": "/alert/Signature", "message": "missing"}],
        )
    nested = [s for s in signatures if doc.parents.get(s) is not doc.root]
    if nested:
        raise doc_error(
            doc,
            nested[0],
            "a ds:Signature that is not a child of <alert> is not accepted: only enveloped "
            "signatures over the whole document are",
        )
    if len(signatures) > MAX_SIGNATURES:
        raise doc_error(
            doc, signatures[-1], f"{len(signatures)} signatures; at most {MAX_SIGNATURES}"
        )
    for signature in signatures:
        _check_shape(doc, signature)
    when = at or datetime.now(UTC)
    if not certificate.not_valid_before_utc <= when <= certificate.not_valid_after_utc:
        raise CapSignatureError(
            f"office {office}'s CAP certificate {describe(certificate)} is not valid at "
            f"{when.isoformat(timespec='seconds')} (valid {certificate.not_valid_before_utc} to "
            f"{certificate.not_valid_after_utc}); the office must configure its current one",
            details=[{"field": "cap_certificate", "message": "expired or not yet valid"}],
        )
    try:
        tree = etree.fromstring(data, parser=_parser())
    except etree.XMLSyntaxError as exc:  # read by expat before; libxml2 must agree
        raise CapSignatureError(
            f"the signed document cannot be read for verification: {exc}"
        ) from exc
    failures = []
    for index in range(len(signatures)):
        try:
            _verify_one(doc, tree, index, certificate, at)
            return
        except CapSignatureError as exc:
            failures.append({"field": f"/alert/Signature[{index + 1}]", "message": exc.message})
    reasons = "; ".join(f"signature {i + 1}: {f['message']}" for i, f in enumerate(failures))
    raise CapSignatureError(
        f"no signature of this message verifies with office {office}'s certificate "
        f"{describe(certificate)}: {reasons}",
        details=failures,
    )


def doc_error(doc: CapDocument, elem: ET.Element, message: str) -> CapSignatureError:
    path, line = doc.path(elem), doc.line(elem)
    where = f"{path}, line {line}" if line is not None else path
    return CapSignatureError(
        f"CAP {where}: {message}", details=[{"field": path, "line": line, "message": message}]
    )


def _check_shape(doc: CapDocument, signature: ET.Element) -> None:
    """One Reference, to the whole document (``URI=""``), enveloped: refused otherwise."""
    references = signature.findall(f"{_DS}SignedInfo/{_DS}Reference")
    if len(references) != 1:
        raise doc_error(
            doc,
            signature,
            f"the signature has {len(references)} references; exactly one, to the whole "
            'document (URI=""), is accepted',
        )
    reference = references[0]
    uri = reference.get("URI")
    if uri != "":
        raise doc_error(
            doc,
            reference,
            f'the signature\'s reference is URI={uri!r}; only URI="" (the whole document) is '
            "accepted, so no part of the message can be left unsigned or moved",
        )
    transforms = [t.get("Algorithm") for t in reference.iter(f"{_DS}Transform")]
    if ENVELOPED not in transforms:
        raise doc_error(
            doc,
            reference,
            "the signature's reference lacks the enveloped-signature transform; only enveloped "
            "signatures are accepted",
        )


def _verify_one(
    doc: CapDocument,
    tree: etree._Element,
    index: int,
    certificate: x509.Certificate,
    at: datetime | None,
) -> None:
    """Signature ``index`` (of the root's), on the document without the others."""
    alone = etree.fromstring(etree.tostring(tree), parser=_parser())
    for position, other in enumerate(alone.findall(f"{_DS}Signature")):
        if position != index:
            alone.remove(other)
    config = SignatureConfiguration(
        location="./",  # a child of <alert>, nowhere else
        expect_references=1,
        verification_time=at,
    )
    try:
        # No schema check of the signature: real NAADS signatures have Id values with spaces,
        # which XML-DSig's schema refuses; the shape that matters was checked above.
        result: Any = XMLVerifier().verify(
            etree.tostring(alone),
            x509_cert=certificate,
            parser=_parser(),
            expect_config=config,
            validate_schema=False,
        )
    except InvalidDigest as exc:
        raise CapSignatureError(
            f"the message was changed after it was signed (digest mismatch: {exc})"
        ) from exc
    except InvalidCertificate as exc:
        raise CapSignatureError(f"the certificate is not valid: {exc}") from exc
    except InvalidInput as exc:
        raise CapSignatureError(f"the signature is not acceptable: {exc}") from exc
    except SignXMLException as exc:  # InvalidSignature: another key, or a changed SignedInfo
        raise CapSignatureError(
            f"the signature does not verify with this certificate ({exc or 'bad signature'}): "
            "signed by another key, or its SignedInfo was changed"
        ) from exc
    except (ValueError, etree.LxmlError) as exc:  # an unknown algorithm URI, bad base64
        raise CapSignatureError(f"the signature cannot be read: {exc}") from exc
    signed = result.signed_xml
    if signed is None or signed.tag != f"{{{CAP_NS}}}alert" or not _same(doc.root, signed):
        raise CapSignatureError(
            "what the signature covers is not the document the engine reads; refused"
        )


def _same(ours: ET.Element, signed: etree._Element) -> bool:
    """Whether the two trees hold the same CAP elements, attributes and texts, in order
    (signatures left out): the check that both parsers saw one document."""

    def items(elements: Any) -> list[tuple[str, str, list[tuple[str, str]]]]:
        out = []
        for elem in elements:
            if not isinstance(elem.tag, str) or elem.tag.startswith(_DS):
                continue
            out.append((elem.tag, (elem.text or "").strip(), sorted(elem.attrib.items())))
        return out

    return items(_without_signatures(ours)) == items(_without_signatures(signed))


def _without_signatures(root: Any) -> list[Any]:
    skip: set[Any] = set()
    for signature in root.iter(f"{_DS}Signature"):
        skip.update(signature.iter())
    return [elem for elem in root.iter() if elem not in skip]


# --- sign -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CapSigner:
    """The engine's signing key and its certificate (put in ``KeyInfo``)."""

    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def from_pem(cls, key_pem: bytes, certificate_pem: bytes) -> CapSigner:
        """``ValueError`` saying which of the two is wrong, or that they do not match."""
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"the signing key is not an unencrypted PEM private key ({exc})"
            ) from exc
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ValueError(f"the signing key is {type(key).__name__}; use an RSA or EC key")
        if isinstance(key, rsa.RSAPrivateKey) and key.key_size < 2048:
            raise ValueError(f"the RSA signing key has {key.key_size} bits; use 2048 or more")
        certificate = load_certificate(certificate_pem)
        public = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        if key.public_key().public_bytes(der, public) != certificate.public_key().public_bytes(
            der, public
        ):
            raise ValueError("the signing certificate is not the signing key's")
        return cls(key, certificate)

    @property
    def method(self) -> SignatureMethod:
        # RSA PKCS#1 v1.5 signatures are deterministic: the same document signs to the same
        # bytes, so its ETag holds. ECDSA's are not (the engine caches what it signed).
        if isinstance(self.key, rsa.RSAPrivateKey):
            return SignatureMethod.RSA_SHA256
        return SignatureMethod.ECDSA_SHA256

    def sign(self, data: bytes) -> bytes:
        """``data`` (our CAP document) with an enveloped signature over the whole of it, as the
        last child of ``<alert>`` (where CAP's schema allows it)."""
        root = etree.fromstring(data, parser=_parser())
        signer = XMLSigner(
            signature_algorithm=self.method,
            digest_algorithm=DigestAlgorithm.SHA256,
            # Exclusive C14N 1.0: what every XML-DSig 1.0 verifier has (NAADS uses it too).
            c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
        )
        signed = signer.sign(root, key=self.key, cert=[self.certificate])
        out: bytes = etree.tostring(signed, xml_declaration=True, encoding="UTF-8")
        return out
