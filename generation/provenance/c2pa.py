"""C2PA content credentials on every original: a signed manifest saying a trained algorithm made
the image. Signed with the operator's certificate (SDWEB_C2PA_CERT and SDWEB_C2PA_KEY, PEM), or
by default with a local one made on first use under the var folder: valid and tamper-evident,
but on no trust list, so verifiers report it as untrusted."""

import datetime
import functools
import io
import json
import os
from pathlib import Path

from django.conf import settings

from generation.engine import __version__
from generation.engine.metadata import AI_GENERATED

UNTRUSTED = "signingCredential.untrusted"


def _manifest(title: str) -> dict:
    return {"claim_generator_info": [{"name": "sdweb", "version": __version__}], "title": title,
            "assertions": [{"label": "c2pa.actions", "data": {"actions": [
                {"action": "c2pa.created", "digitalSourceType": AI_GENERATED}]}}]}


@functools.lru_cache(maxsize=1)
def _signing():
    """(signer, context), or None when SDWEB_C2PA is off."""
    options = settings.SDWEB
    if options["C2PA"] == "off":
        return None
    import c2pa

    if options["C2PA_CERT"] and options["C2PA_KEY"]:
        chain, key = Path(options["C2PA_CERT"]).read_bytes(), Path(options["C2PA_KEY"]).read_bytes()
    else:
        chain, key = local_credentials(settings.VAR_DIR / "c2pa")
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain, key,
                                                       options["C2PA_TSA_URL"] or None))
    # No thumbnail in the manifest: it would cost 50 ms and a copy of the image per original.
    return signer, c2pa.Context(c2pa.Settings.from_dict({"builder": {"thumbnail": {"enabled": False}}}))


def sign_png(data: bytes, title: str) -> bytes:
    """The PNG with a signed C2PA manifest embedded (pixels and other chunks unchanged)."""
    signing = _signing()
    if signing is None:
        return data
    import c2pa

    signer, context = signing
    out = io.BytesIO()
    with c2pa.Builder(_manifest(title), context) as builder:
        builder.sign(signer, "image/png", io.BytesIO(data), out)
    return out.getvalue()


def read_credentials(data: bytes, mime: str) -> dict:
    """What the file's C2PA manifest says: present, issuer, source type, and validation problems
    (an untrusted local certificate is reported apart from real problems)."""
    import c2pa

    try:
        with c2pa.Reader(mime, io.BytesIO(data)) as reader:
            store = json.loads(reader.json())
    except Exception:  # no manifest, or a format c2pa doesn't read
        return {"present": False}
    active = store["manifests"][store["active_manifest"]]
    codes = [status["code"] for status in store.get("validation_status", [])]
    actions = [a for assertion in active.get("assertions", []) if assertion["label"].startswith("c2pa.actions")
               for a in assertion["data"].get("actions", [])]
    return {"present": True, "issuer": active.get("signature_info", {}).get("issuer", ""),
            "ai_generated": any(a.get("digitalSourceType") == AI_GENERATED for a in actions),
            "trusted": UNTRUSTED not in codes, "problems": [c for c in codes if c != UNTRUSTED]}


def local_credentials(folder: Path) -> tuple[bytes, bytes]:
    """A local root and an ES256 signing certificate it issued, made once and kept in `folder`."""
    chain_file, key_file = folder / "chain.pem", folder / "key.pem"
    if not (chain_file.exists() and key_file.exists()):
        folder.mkdir(parents=True, exist_ok=True)
        chain, key = _make_credentials()
        for path, data in ((key_file, key), (chain_file, chain)):
            partial = path.with_suffix(f".{os.getpid()}.tmp")
            partial.write_bytes(data)
            partial.chmod(0o600)
            os.replace(partial, path)  # two processes starting at once: the last one's pair stands
    return chain_file.read_bytes(), key_file.read_bytes()


def _make_credentials() -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(common):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sdweb (local, untrusted)")])

    def certificate(subject, issuer, public_key, signing_key, days, ca):
        usage = dict(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                     data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                     encipher_only=False, decipher_only=False)
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=days))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
                   .add_extension(x509.KeyUsage(**usage), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))
        if not ca:
            builder = (builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                                             critical=False)
                       .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()),
                                      critical=False))
        return builder.sign(signing_key, hashes.SHA256())

    root_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = certificate(name("sdweb local root"), name("sdweb local root"), root_key.public_key(), root_key, 3650, True)
    leaf = certificate(name("sdweb signer"), root.subject, key.public_key(), root_key, 3650, False)
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, root))
    return chain, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
