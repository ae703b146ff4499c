"""`wattproof pki ...`: the project CA, broker and client certificates, revocation, broker config (docs/broker.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from wattproof import pki

app = typer.Typer(no_args_is_help=True)

DIR = typer.Argument(..., help="PKI directory (made by `pki init`).")


@app.command("init")
def init(
    pki_dir: Path = DIR,
    days: int = typer.Option(pki.CA_DAYS, "--days", min=1, help="CA validity in days."),
    name: str | None = typer.Option(None, "--name", help="CA common name (default: 'wattproof project CA <random>')."),
    force: bool = typer.Option(False, "--force", help="Replace an existing CA (every certificate it issued stops working)."),
) -> None:
    """Make the project CA (ECDSA P-256; key 0600) and an empty CRL."""
    paths = pki.init_ca(pki_dir, days=days, name=name, force=force)
    typer.echo(f"CA: {paths.ca_cert} (key {paths.ca_key}, keep it off the broker host); CRL: {paths.crl}")


@app.command("server")
def server(
    pki_dir: Path = DIR,
    host: list[str] = typer.Option(["localhost", "127.0.0.1"], "--host",
                                   help="DNS name or IP address clients use to reach the broker (repeat; each a SAN)."),
    days: int = typer.Option(pki.LEAF_DAYS, "--days", min=1, help="Validity in days."),
) -> None:
    """Issue the broker's server certificate."""
    cert, key = pki.issue_server(pki_dir, host, days=days)
    typer.echo(f"server certificate: {cert} (key {key}) for {', '.join(host)}")


@app.command("client")
def client(
    pki_dir: Path = DIR,
    name: str = typer.Argument(..., help="MQTT username = certificate CN: a device id, or 'ingest'."),
    days: int = typer.Option(pki.LEAF_DAYS, "--days", min=1, help="Validity in days."),
    force: bool = typer.Option(False, "--force", help="Issue a new key and certificate over an existing one."),
) -> None:
    """Issue a client certificate for one MQTT identity (a device, or the ingest service)."""
    cert, key = pki.issue_client(pki_dir, name, days=days, force=force)
    typer.echo(f"client certificate: {cert} (key {key})")


@app.command("revoke")
def revoke(
    pki_dir: Path = DIR,
    name: str = typer.Argument(..., help="The identity whose certificates to revoke."),
) -> None:
    """Revoke an identity's client certificates and re-sign the CRL (then reload the broker: SIGHUP)."""
    serials = pki.revoke(pki_dir, name)
    typer.echo(f"revoked {name}: serial {', '.join(serials)}; CRL {pki.PkiPaths(pki_dir).crl} "
               "(reload the broker: kill -HUP <pid>)")


@app.command("crl")
def crl(
    pki_dir: Path = DIR,
    days: int = typer.Option(pki.CRL_DAYS, "--days", min=1, help="Days until the CRL's nextUpdate."),
) -> None:
    """Re-sign the CRL (before its nextUpdate passes: an expired CRL makes the broker refuse everyone)."""
    typer.echo(f"CRL: {pki.write_crl(pki_dir, days=days)}")


@app.command("broker-config")
def broker_config(
    pki_dir: Path = DIR,
    out: Path = typer.Option(..., "--out", help="mosquitto.conf to write (its ACL goes beside it, suffix .acl)."),
    port: int = typer.Option(8883, "--port", min=1, max=65535, help="TLS listener port."),
    bind: str | None = typer.Option(None, "--bind", help="Listen on this address only (default: all)."),
    pki_path: str | None = typer.Option(None, "--pki-path", help="The PKI directory as the broker sees it "
                                        "(e.g. inside a container)."),
    acl_path: str | None = typer.Option(None, "--acl-path", help="The ACL file as the broker sees it."),
    data_dir: str | None = typer.Option(None, "--data-dir", help="Persistence directory as the broker sees it "
                                        "(default: no persistence)."),
    log_dest: str = typer.Option("stderr", "--log-dest", help="Mosquitto log_dest (stderr, stdout, 'file PATH')."),
    user: str | None = typer.Option(None, "--user", help="User Mosquitto runs as when started as root "
                                    "(default: mosquitto; it must be able to read server.key)."),
) -> None:
    """Write a Mosquitto configuration: TLS with client certificates, no anonymous clients, per-device ACL."""
    conf, acl = pki.write_broker_config(pki_dir, out, port=port, bind=bind, pki_path=pki_path, acl_path=acl_path,
                                        data_dir=data_dir, log_dest=log_dest, user=user)
    typer.echo(f"broker config: {conf}; ACL: {acl}")


# --- how a client (simulate, ingest, the agent) presents itself to a locked-down broker ----------
# Shared by the commands that connect to the broker; each is also an environment variable.
MQTT_CA = typer.Option(None, "--mqtt-ca", envvar="WATTPROOF_MQTT_CA",
                       help="CA certificate to trust for an mqtts:// broker (default: the system's).")
MQTT_CERT = typer.Option(None, "--mqtt-cert", envvar="WATTPROOF_MQTT_CERT",
                         help="Client certificate (PEM) for an mqtts:// broker; its CN is the MQTT username. "
                         "'{device}' in the path stands for each device's id (a simulated fleet).")
MQTT_KEY = typer.Option(None, "--mqtt-key", envvar="WATTPROOF_MQTT_KEY",
                        help="The client certificate's key (PEM); '{device}' as for --mqtt-cert.")
MQTT_USERNAME = typer.Option(None, "--mqtt-username", envvar="WATTPROOF_MQTT_USERNAME",
                             help="MQTT username (instead of the one in the URL).")
MQTT_PASSWORD = typer.Option(None, "--mqtt-password", envvar="WATTPROOF_MQTT_PASSWORD",
                             help="MQTT password (prefer the environment variable: options show in ps).")
