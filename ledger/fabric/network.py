"""A local Hyperledger Fabric network run as plain processes (no Docker): two organisations with one
peer each, a Raft (etcdraft) orderer set of three nodes (or one, ``orderers=1``), one application
channel created through the channel participation API on every orderer, and the wattproof chaincode
deployed as a service.

Owns: generating crypto material (cryptogen), the channel genesis block (configtxgen), per-node
configs (Fabric's sampleconfig with our settings), starting/stopping the processes, the chaincode
lifecycle (package → install on both peers → approve for both orgs → commit) and the connection
profile a Gateway client needs. The state (ports, pids, paths) lives in ``<dir>/network.json`` so
``wattproof fabric down``/``status`` work from another process.

Everything listens on 127.0.0.1. TLS is on for every node (server-side; the orderer's admin API uses
mutual TLS, as Fabric requires). Each orderer has its own TLS identity, which is also its identity in
the Raft consenter set (cluster traffic shares the orderer's main port). Every orderer is named in
the channel config's orderer endpoints, so a peer's Gateway and block delivery fail over to another
one. The chaincode endorsement policy needs both organisations.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from device.errors import WattproofError

REPO = Path(__file__).resolve().parents[2]
FABRIC_VERSION = "v2.5.9"
CHANNEL = "wattproof"
CHAINCODE = "wattproof"
CC_LABEL = "wattproof_1"
ORGS = ("org1", "org2")
ENDORSEMENT_POLICY = "AND('Org1MSP.peer','Org2MSP.peer')"
DOMAIN = "wattproof.test"
ORDERERS = 3  # Raft consenters of a new network: tolerates one stopped orderer (a majority of 3 remains)


class FabricNetworkError(WattproofError, RuntimeError):
    """The network could not be started, or a lifecycle step failed (message says which and why)."""


def fabric_bin_dir() -> Path:
    """Where Fabric's binaries are: $WATTPROOF_FABRIC_BIN, else the repository cache (built on demand)."""
    env = os.environ.get("WATTPROOF_FABRIC_BIN")
    return Path(env) if env else REPO / ".cache" / "fabric" / FABRIC_VERSION / "bin"


def chaincode_binary() -> Path:
    env = os.environ.get("WATTPROOF_CHAINCODE_BIN")
    return Path(env) if env else REPO / ".cache" / "fabric" / "chaincode" / "wattproof-cc"


def ensure_binaries() -> Path:
    """Build Fabric and the chaincode if missing (``ledger/fabric/build-binaries.sh``; ~3 min once)."""
    bindir = fabric_bin_dir()
    needed = [bindir / b for b in ("peer", "orderer", "osnadmin", "configtxgen", "cryptogen")]
    script = REPO / "ledger" / "fabric" / "build-binaries.sh"
    if (not all(p.exists() for p in needed) or not chaincode_binary().exists()) and script.exists():
        subprocess.run(["bash", str(script)], check=True)
    missing = [str(p) for p in [*needed, chaincode_binary()] if not p.exists()]
    if missing:
        raise FabricNetworkError(f"Fabric binaries missing: {', '.join(missing)} (run `make fabric-bins`)")
    return bindir


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Ports:
    """The network's 127.0.0.1 ports: the first ten as before Raft (one orderer), then the second and
    third orderer's (0 in a network made with one orderer)."""

    orderer: int
    orderer_admin: int
    orderer_ops: int
    peer1: int
    peer1_cc: int
    peer1_ops: int
    peer2: int
    peer2_cc: int
    peer2_ops: int
    chaincode: int
    orderer2: int = 0
    orderer2_admin: int = 0
    orderer2_ops: int = 0
    orderer3: int = 0
    orderer3_admin: int = 0
    orderer3_ops: int = 0

    COUNT = 16  # ports of a three-orderer network

    @classmethod
    def free(cls) -> Ports:
        return cls(*free_ports(cls.COUNT))

    @classmethod
    def from_base(cls, base: int) -> Ports:
        return cls(*range(base, base + cls.COUNT))

    def peer(self, org: str) -> int:
        return self.peer1 if org == "org1" else self.peer2

    def of_orderer(self, name: str) -> tuple[int, int, int]:
        """(listen, admin, operations) ports of orderer ``name`` ("orderer", "orderer2", "orderer3")."""
        return getattr(self, name), getattr(self, f"{name}_admin"), getattr(self, f"{name}_ops")


@dataclass
class Profile:
    """What a Gateway client needs: endpoint, TLS root, identity and names."""

    channel: str
    chaincode: str
    peers: dict[str, str]  # org → host:port of its peer (Gateway service)
    tls_ca: dict[str, str]  # org → TLS CA certificate file
    msp_id: dict[str, str]
    user_cert: dict[str, str]  # org → client certificate (PEM) of User1
    user_key: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class State:
    directory: str
    ports: Ports
    batch_timeout: str
    pids: dict[str, int] = field(default_factory=dict)
    started: dict[str, int] = field(default_factory=dict)  # /proc start time of each pid: a reused pid is not ours
    package_id: str = ""
    orderers: int = 1  # a state file written before Raft had one orderer

    def save(self) -> None:
        p = Path(self.directory) / "network.json"
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(p)

    @classmethod
    def load(cls, directory: Path) -> State | None:
        p = directory / "network.json"
        if not p.exists():
            return None
        d = json.loads(p.read_text())
        d["ports"] = Ports(**d["ports"])
        return cls(**d)


def _msp_id(org: str) -> str:
    return "Org1MSP" if org == "org1" else "Org2MSP"


def orderer_names(n: int) -> list[str]:
    """Process (and host) names of an ``n``-orderer set: "orderer", "orderer2", "orderer3"."""
    return ["orderer" if i == 0 else f"orderer{i + 1}" for i in range(n)]


class FabricNetwork:
    """``FabricNetwork(dir).up()`` starts everything and deploys the chaincode; ``down()`` stops it."""

    def __init__(self, directory: Path, ports: Ports | None = None, batch_timeout: str = "100ms",
                 orderers: int = ORDERERS) -> None:
        if orderers not in (1, 3):
            raise FabricNetworkError(f"orderers must be 1 or 3, not {orderers}")
        self.dir = Path(directory).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        existing = State.load(self.dir)
        if existing is not None and ports is None:
            self.state = existing  # an existing network keeps its orderer count
        else:
            self.state = State(str(self.dir), ports or Ports.free(), batch_timeout, orderers=orderers)
        self.bin = fabric_bin_dir()

    # ---- paths ---------------------------------------------------------------------------------
    @property
    def ports(self) -> Ports:
        return self.state.ports

    @property
    def orderers(self) -> list[str]:
        """Names of this network's orderers (each also a process name and config directory)."""
        return orderer_names(self.state.orderers)

    @property
    def nodes(self) -> list[str]:
        return [*self.orderers, "peer-org1", "peer-org2", "chaincode"]

    @property
    def crypto(self) -> Path:
        return self.dir / "crypto"

    def _org_dir(self, org: str) -> Path:
        return self.crypto / "peerOrganizations" / f"{org}.{DOMAIN}"

    def _peer_tls(self, org: str) -> Path:
        return self._org_dir(org) / "peers" / f"peer0.{org}.{DOMAIN}" / "tls"

    def _orderer_node(self, name: str = "orderer") -> Path:
        return self.crypto / "ordererOrganizations" / DOMAIN / "orderers" / f"{name}.{DOMAIN}"

    def _orderer_admin(self) -> Path:
        return self.crypto / "ordererOrganizations" / DOMAIN / "users" / f"Admin@{DOMAIN}"

    def _orderer_ca(self) -> Path:  # one TLS CA for the orderer organisation: the same file in every node
        return self._orderer_node() / "tls" / "ca.crt"

    def profile(self) -> Profile:
        def user(org: str) -> Path:
            return self._org_dir(org) / "users" / f"User1@{org}.{DOMAIN}" / "msp"

        def key_of(d: Path) -> str:
            return str(next((d / "keystore").iterdir()))

        return Profile(
            channel=CHANNEL,
            chaincode=CHAINCODE,
            peers={o: f"127.0.0.1:{self.ports.peer(o)}" for o in ORGS},
            tls_ca={o: str(self._peer_tls(o) / "ca.crt") for o in ORGS},
            msp_id={o: _msp_id(o) for o in ORGS},
            user_cert={o: str(user(o) / "signcerts" / f"User1@{o}.{DOMAIN}-cert.pem") for o in ORGS},
            user_key={o: key_of(user(o)) for o in ORGS},
        )

    # ---- generation ----------------------------------------------------------------------------
    def _run(self, args: list[str], env: dict[str, str] | None = None, what: str = "", attempts: int = 1) -> str:
        full_env = {**os.environ, **(env or {})}
        last = ""
        for i in range(attempts):
            proc = subprocess.run(args, capture_output=True, text=True, env=full_env, cwd=self.dir)
            if proc.returncode == 0:
                return proc.stdout + proc.stderr
            last = (proc.stderr or proc.stdout).strip().splitlines()
            last = "\n".join(last[-6:])
            if i + 1 < attempts:
                time.sleep(min(0.5 * 2**i, 3))
        raise FabricNetworkError(f"{what or Path(args[0]).name} failed: {last}")

    def _generate_crypto(self) -> None:
        if self.crypto.exists():
            return
        spec = {
            "OrdererOrgs": [{"Name": "Orderer", "Domain": DOMAIN, "EnableNodeOUs": True,
                             "Specs": [{"Hostname": n, "SANS": ["127.0.0.1", "localhost"]} for n in self.orderers]}],
            "PeerOrgs": [{"Name": _msp_id(o)[:-3], "Domain": f"{o}.{DOMAIN}", "EnableNodeOUs": True,
                          "Template": {"Count": 1, "SANS": ["127.0.0.1", "localhost"]}, "Users": {"Count": 1}}
                         for o in ORGS],
        }
        (self.dir / "crypto-config.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        self._run([str(self.bin / "cryptogen"), "generate", "--config", str(self.dir / "crypto-config.yaml"),
                   "--output", str(self.crypto)], what="cryptogen")

    def _configtx(self) -> dict[str, Any]:
        def sig(rule: str) -> dict[str, str]:
            return {"Type": "Signature", "Rule": rule}

        def meta(rule: str) -> dict[str, str]:
            return {"Type": "ImplicitMeta", "Rule": rule}

        orderer_org = {
            "Name": "OrdererOrg", "ID": "OrdererMSP",
            "MSPDir": str(self.crypto / "ordererOrganizations" / DOMAIN / "msp"),
            "Policies": {"Readers": sig("OR('OrdererMSP.member')"), "Writers": sig("OR('OrdererMSP.member')"),
                         "Admins": sig("OR('OrdererMSP.admin')")},
            # every orderer: the peers' Gateway (Submit) and block delivery try the others when one fails
            "OrdererEndpoints": [f"127.0.0.1:{self.ports.of_orderer(n)[0]}" for n in self.orderers],
        }
        orgs = []
        for o in ORGS:
            m = _msp_id(o)
            orgs.append({
                "Name": m, "ID": m, "MSPDir": str(self._org_dir(o) / "msp"),
                "Policies": {"Readers": sig(f"OR('{m}.admin','{m}.peer','{m}.client')"),
                             "Writers": sig(f"OR('{m}.admin','{m}.client')"),
                             "Admins": sig(f"OR('{m}.admin')"), "Endorsement": sig(f"OR('{m}.peer')")},
                "AnchorPeers": [{"Host": "127.0.0.1", "Port": self.ports.peer(o)}],
            })
        consenters = [{"Host": "127.0.0.1", "Port": self.ports.of_orderer(n)[0],
                       "ClientTLSCert": str(self._orderer_node(n) / "tls" / "server.crt"),
                       "ServerTLSCert": str(self._orderer_node(n) / "tls" / "server.crt")} for n in self.orderers]
        return {
            "Profiles": {"WattproofChannel": {
                "Policies": {"Readers": meta("ANY Readers"), "Writers": meta("ANY Writers"),
                             "Admins": meta("MAJORITY Admins")},
                "Capabilities": {"V2_0": True},
                "Orderer": {
                    "OrdererType": "etcdraft",
                    "BatchTimeout": self.state.batch_timeout,
                    "BatchSize": {"MaxMessageCount": 500, "AbsoluteMaxBytes": "10 MB", "PreferredMaxBytes": "2 MB"},
                    "EtcdRaft": {
                        "Consenters": consenters,
                        "Options": {"TickInterval": "100ms", "ElectionTick": 10, "HeartbeatTick": 1,
                                    "MaxInflightBlocks": 5, "SnapshotIntervalSize": "16 MB"},
                    },
                    "Organizations": [orderer_org],
                    "Policies": {"Readers": meta("ANY Readers"), "Writers": meta("ANY Writers"),
                                 "Admins": meta("MAJORITY Admins"), "BlockValidation": meta("ANY Writers")},
                    "Capabilities": {"V2_0": True},
                },
                "Application": {
                    "Organizations": orgs,
                    "Policies": {"Readers": meta("ANY Readers"), "Writers": meta("ANY Writers"),
                                 "Admins": meta("MAJORITY Admins"),
                                 "LifecycleEndorsement": meta("MAJORITY Endorsement"),
                                 "Endorsement": meta("MAJORITY Endorsement")},
                    "Capabilities": {"V2_5": True},
                },
            }},
        }

    def _generate_channel(self) -> Path:
        block = self.dir / "channel" / f"{CHANNEL}.block"
        if block.exists():
            return block
        cfg = self.dir / "channel"
        cfg.mkdir(exist_ok=True)
        (cfg / "configtx.yaml").write_text(yaml.safe_dump(self._configtx(), sort_keys=False))
        self._run([str(self.bin / "configtxgen"), "-profile", "WattproofChannel", "-outputBlock", str(block),
                   "-channelID", CHANNEL], env={"FABRIC_CFG_PATH": str(cfg)}, what="configtxgen")
        return block

    def _sampleconfig(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = yaml.safe_load((self.bin.parent / "config" / name).read_text())
        return data

    def _write_orderer_config(self, name: str = "orderer") -> Path:
        d = self.dir / name
        (d / "data").mkdir(parents=True, exist_ok=True)
        c = self._sampleconfig("orderer.yaml")
        tls = self._orderer_node(name) / "tls"
        port, admin, ops = self.ports.of_orderer(name)
        g = c["General"]
        # Raft traffic between orderers shares the main port (no Cluster.ListenPort): each node
        # authenticates the others by the TLS certificates named in the channel's consenter set.
        g.update(ListenAddress="127.0.0.1", ListenPort=port, BootstrapMethod="none",
                 LocalMSPDir=str(self._orderer_node(name) / "msp"), LocalMSPID="OrdererMSP")
        g["TLS"].update(Enabled=True, PrivateKey=str(tls / "server.key"), Certificate=str(tls / "server.crt"),
                        RootCAs=[str(tls / "ca.crt")], ClientAuthRequired=False)
        # RPCTimeout (Fabric's default 7 s) bounds how long a follower waits when forwarding a transaction
        # to a leader that has just gone: with 7 s a stopped leader stalled anchoring for ~7 s after the
        # election had already finished (~1.2 s); all nodes are on one host, so 2 s is ample.
        g["Cluster"].update(ClientCertificate=str(tls / "server.crt"), ClientPrivateKey=str(tls / "server.key"),
                            RootCAs=[str(tls / "ca.crt")], RPCTimeout="2s")
        c["FileLedger"]["Location"] = str(d / "data" / "ledger")
        c["Consensus"] = {"WALDir": str(d / "data" / "wal"), "SnapDir": str(d / "data" / "snap")}
        c["Operations"]["ListenAddress"] = f"127.0.0.1:{ops}"
        c["Metrics"]["Provider"] = "prometheus"
        c["Admin"]["ListenAddress"] = f"127.0.0.1:{admin}"
        c["Admin"]["TLS"].update(Enabled=True, PrivateKey=str(tls / "server.key"), Certificate=str(tls / "server.crt"),
                                 RootCAs=[str(tls / "ca.crt")], ClientAuthRequired=True,
                                 ClientRootCAs=[str(tls / "ca.crt")])
        c["ChannelParticipation"]["Enabled"] = True
        (d / "orderer.yaml").write_text(yaml.safe_dump(c, sort_keys=False))
        return d

    def _write_peer_config(self, org: str) -> Path:
        d = self.dir / f"peer-{org}"
        (d / "data").mkdir(parents=True, exist_ok=True)
        c = self._sampleconfig("core.yaml")
        p = c["peer"]
        port = self.ports.peer(org)
        cc_port = self.ports.peer1_cc if org == "org1" else self.ports.peer2_cc
        ops = self.ports.peer1_ops if org == "org1" else self.ports.peer2_ops
        tls = self._peer_tls(org)
        p.update(id=f"peer0.{org}.{DOMAIN}", networkId="wattproof", listenAddress=f"127.0.0.1:{port}",
                 address=f"127.0.0.1:{port}", chaincodeListenAddress=f"127.0.0.1:{cc_port}",
                 chaincodeAddress=f"127.0.0.1:{cc_port}", fileSystemPath=str(d / "data"),
                 mspConfigPath=str(self._org_dir(org) / "peers" / f"peer0.{org}.{DOMAIN}" / "msp"),
                 localMspId=_msp_id(org))
        # Gossip timers for one machine: Fabric's defaults (alive 5 s, expiry and reconnect 25 s) leave
        # the other org's peer unknown to discovery for ~30 s after start when the first contact is
        # missed, and the Gateway cannot satisfy AND(Org1, Org2) until then.
        p["gossip"].update(bootstrap=f"127.0.0.1:{port}", externalEndpoint=f"127.0.0.1:{port}",
                           endpoint="", useLeaderElection=False, orgLeader=True, aliveTimeInterval="1s",
                           aliveExpirationTimeout="5s", reconnectInterval="1s", membershipTrackerInterval="1s",
                           requestStateInfoInterval="1s", publishStateInfoInterval="1s")
        # Outbound TLS trusts every org's TLS CA from the start (the channel config adds them only once
        # the peer has processed it, so the first gossip handshakes would fail).
        bundle = self.dir / "tls-roots.pem"
        if not bundle.exists():
            cas = [self._peer_tls(o) / "ca.crt" for o in ORGS] + [self._orderer_ca()]
            bundle.write_bytes(b"".join(c.read_bytes() for c in cas))
        p["tls"].update(enabled=True, clientAuthRequired=False, cert={"file": str(tls / "server.crt")},
                        key={"file": str(tls / "server.key")}, rootcert={"file": str(bundle)},
                        clientRootCAs={"files": [str(tls / "ca.crt")]})
        p["gateway"]["enabled"] = True
        c["vm"]["endpoint"] = ""
        c["chaincode"]["externalBuilders"] = [{"name": "wattproof-ccaas",
                                               "path": str(resources.files("ledger.fabric") / "builder")}]
        c["operations"]["listenAddress"] = f"127.0.0.1:{ops}"
        c["metrics"]["provider"] = "prometheus"
        c["ledger"]["state"]["stateDatabase"] = "goleveldb"
        (d / "core.yaml").write_text(yaml.safe_dump(c, sort_keys=False))
        return d

    # ---- processes -----------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log = open(self.dir / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(args, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.dir)
        log.close()
        self.state.pids[name] = proc.pid
        self.state.started[name] = _proc_start(proc.pid) or 0
        self.state.save()

    def _wait_healthy(self, name: str, ops_port: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._alive(name):
                raise FabricNetworkError(f"{name} exited during start-up; last log lines:\n{self.log_tail(name)}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ops_port}/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise FabricNetworkError(f"{name} not healthy after {timeout:.0f} s; log:\n{self.log_tail(name)}")

    def log_tail(self, name: str, n: int = 15) -> str:
        p = self.dir / "logs" / f"{name}.log"
        return "\n".join(p.read_text(errors="replace").splitlines()[-n:]) if p.exists() else "(no log)"

    def _alive(self, name: str) -> bool:
        pid = self.state.pids.get(name)
        if not pid:
            return False
        if self.state.started.get(name) and _proc_start(pid) != self.state.started[name]:
            return False  # that pid is another process now
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ", 1)[1].startswith("Z"):
                    os.waitpid(pid, os.WNOHANG)
                    return False
            os.kill(pid, 0)
        except (OSError, IndexError, ChildProcessError):
            return False
        return True

    def start_orderer(self, name: str = "orderer", wait: bool = True) -> None:
        d = self._write_orderer_config(name)
        self._spawn(name, [str(self.bin / "orderer")], {"FABRIC_CFG_PATH": str(d)})
        if wait:
            self._wait_healthy(name, self.ports.of_orderer(name)[2])

    def start_peer(self, org: str) -> None:
        d = self.dir / f"peer-{org}"
        if not (d / "core.yaml").exists():
            self._write_peer_config(org)
        self._spawn(f"peer-{org}", [str(self.bin / "peer"), "node", "start"], {"FABRIC_CFG_PATH": str(d)})
        self._wait_healthy(f"peer-{org}", self.ports.peer1_ops if org == "org1" else self.ports.peer2_ops)

    def stop(self, name: str, timeout: float = 10) -> None:
        ours = self._alive(name)
        pid = self.state.pids.pop(name, None)
        self.state.started.pop(name, None)
        self.state.save()
        if not pid or not ours:  # gone already, or the pid now belongs to someone else: never signal it
            return
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    return
            except ChildProcessError:  # not our child (started by another process): poll it
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
            time.sleep(0.1)
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def start_chaincode(self) -> None:
        self._spawn("chaincode", [str(chaincode_binary())],
                    {"CHAINCODE_SERVER_ADDRESS": f"127.0.0.1:{self.ports.chaincode}",
                     "CHAINCODE_ID": self.state.package_id})
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if not self._alive("chaincode"):
                raise FabricNetworkError(f"chaincode exited: {self.log_tail('chaincode')}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.ports.chaincode)) == 0:
                    return
            time.sleep(0.1)
        raise FabricNetworkError("chaincode server did not start listening")

    # ---- admin commands ------------------------------------------------------------------------
    def _peer_env(self, org: str) -> dict[str, str]:
        return {
            "FABRIC_CFG_PATH": str(self.dir / f"peer-{org}"),
            "CORE_PEER_LOCALMSPID": _msp_id(org),
            "CORE_PEER_MSPCONFIGPATH": str(self._org_dir(org) / "users" / f"Admin@{org}.{DOMAIN}" / "msp"),
            "CORE_PEER_ADDRESS": f"127.0.0.1:{self.ports.peer(org)}",
            "CORE_PEER_TLS_ENABLED": "true",
            "CORE_PEER_TLS_ROOTCERT_FILE": str(self._peer_tls(org) / "ca.crt"),
        }

    def _orderer_flags(self) -> list[str]:
        return ["-o", f"127.0.0.1:{self.ports.orderer}", "--tls", "--cafile", str(self._orderer_ca())]

    def _osnadmin(self, name: str, *args: str, what: str, attempts: int = 1) -> str:
        adm = self._orderer_admin() / "tls"
        return self._run([str(self.bin / "osnadmin"), "channel", *args, "-o", f"127.0.0.1:{self.ports.of_orderer(name)[1]}",
                          "--ca-file", str(self._orderer_ca()), "--client-cert", str(adm / "client.crt"),
                          "--client-key", str(adm / "client.key")], what=what, attempts=attempts)

    def _join_orderer(self, block: Path, name: str = "orderer") -> None:
        """Channel participation API: the orderer joins the channel as a consenter from its genesis block."""
        self._osnadmin(name, "join", "--channelID", CHANNEL, "--config-block", str(block),
                       what=f"osnadmin channel join ({name})", attempts=5)

    def orderer_channel(self, name: str) -> dict[str, Any]:
        """The channel as orderer ``name`` reports it (channel participation API): name, url,
        consensusRelation ("consenter"), status ("active" | "onboarding" | …) and height."""
        out = self._osnadmin(name, "list", "--channelID", CHANNEL, what=f"osnadmin channel list ({name})")
        info, _ = json.JSONDecoder().raw_decode(out[out.index("{"):])
        return dict(info)

    def orderer_metric(self, name: str, metric: str) -> float | None:
        """A channel metric of orderer ``name`` from its operations endpoint (Prometheus text), e.g.
        ``consensus_etcdraft_is_leader`` or ``consensus_etcdraft_committed_block_number``; None when
        the orderer does not answer."""
        _, _, ops = self.ports.of_orderer(name)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ops}/metrics", timeout=2) as r:
                text = r.read().decode()
        except (OSError, urllib.error.URLError):
            return None
        for line in text.splitlines():
            if line.startswith(metric + "{") and f'channel="{CHANNEL}"' in line:
                return float(line.rsplit(" ", 1)[1])
        return None

    def raft_leader(self) -> str | None:
        """The orderer that is the channel's Raft leader: the one running orderer whose
        ``consensus_etcdraft_is_leader`` is 1 (None while there is none, or more than one claims it
        during an election)."""
        leaders = [n for n in self.orderers if self._alive(n) and self.orderer_metric(n, "consensus_etcdraft_is_leader") == 1]
        return leaders[0] if len(leaders) == 1 else None

    def wait_raft_leader(self, timeout: float = 30, other_than: str | None = None) -> str:
        """Poll until a Raft leader (other than ``other_than``) exists; returns its name."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.raft_leader()
            if leader is not None and leader != other_than:
                return leader
            time.sleep(0.1)
        raise FabricNetworkError(f"no Raft leader among {', '.join(self.orderers)} after {timeout:.0f} s")

    def _join_peer(self, org: str, block: Path) -> None:
        self._run([str(self.bin / "peer"), "channel", "join", "-b", str(block)], env=self._peer_env(org),
                  what=f"peer channel join ({org})", attempts=10)

    def _package(self) -> Path:
        pkg = self.dir / "chaincode" / f"{CC_LABEL}.tar.gz"
        pkg.parent.mkdir(exist_ok=True)
        conn = json.dumps({"address": f"127.0.0.1:{self.ports.chaincode}", "dial_timeout": "10s",
                           "tls_required": False}).encode()
        meta = json.dumps({"type": "ccaas", "label": CC_LABEL}).encode()
        code = pkg.parent / "code.tar.gz"
        _tar(code, {"connection.json": conn})
        _tar(pkg, {"metadata.json": meta, "code.tar.gz": code.read_bytes()})
        return pkg

    def _deploy_chaincode(self) -> None:
        pkg = self._package()
        out = self._run([str(self.bin / "peer"), "lifecycle", "chaincode", "calculatepackageid", str(pkg)],
                        env=self._peer_env("org1"), what="calculatepackageid")
        self.state.package_id = out.strip().splitlines()[-1].strip()
        self.state.save()
        for org in ORGS:
            self._run([str(self.bin / "peer"), "lifecycle", "chaincode", "install", str(pkg)], env=self._peer_env(org),
                      what=f"chaincode install ({org})")
        self.start_chaincode()
        common = ["--channelID", CHANNEL, "--name", CHAINCODE, "--version", "1", "--sequence", "1",
                  "--signature-policy", ENDORSEMENT_POLICY]
        for org in ORGS:
            self._run([str(self.bin / "peer"), "lifecycle", "chaincode", "approveformyorg", *self._orderer_flags(),
                       *common, "--package-id", self.state.package_id], env=self._peer_env(org),
                      what=f"chaincode approve ({org})", attempts=10)
        peers = []
        for org in ORGS:
            peers += ["--peerAddresses", f"127.0.0.1:{self.ports.peer(org)}",
                      "--tlsRootCertFiles", str(self._peer_tls(org) / "ca.crt")]
        self._run([str(self.bin / "peer"), "lifecycle", "chaincode", "commit", *self._orderer_flags(), *common, *peers],
                  env=self._peer_env("org1"), what="chaincode commit", attempts=10)

    # ---- public --------------------------------------------------------------------------------
    def up(self) -> Profile:
        """Start (or resume) the network; idempotent. Returns the client profile."""
        ensure_binaries()
        (self.dir / "logs").mkdir(exist_ok=True)
        fresh = not (self.dir / "orderer" / "data" / "ledger").exists()
        self._generate_crypto()
        block = self._generate_channel()
        try:
            starting = [n for n in self.orderers if not self._alive(n)]
            for name in starting:  # all at once: they start in parallel, then each is waited for
                self.start_orderer(name, wait=False)
            for name in starting:
                self._wait_healthy(name, self.ports.of_orderer(name)[2])
            for org in ORGS:
                if not self._alive(f"peer-{org}"):
                    self.start_peer(org)
            if fresh:
                for name in self.orderers:
                    self._join_orderer(block, name)
                for org in ORGS:
                    self._join_peer(org, block)
                self.wait_raft_leader()
                self._deploy_chaincode()
            elif not self._alive("chaincode"):
                self.start_chaincode()
        except BaseException:
            self.down()
            raise
        (self.dir / "profile.json").write_text(json.dumps(self.profile().to_json(), indent=2))
        return self.profile()

    def down(self, purge: bool = False) -> None:
        for name in reversed(self.nodes):
            self.stop(name)
        if purge:
            shutil.rmtree(self.dir, ignore_errors=True)

    def status(self) -> dict[str, Any]:
        procs = {n: self._alive(n) for n in self.nodes}
        return {"directory": str(self.dir), "processes": procs, "ports": asdict(self.ports),
                "orderers": self.state.orderers,
                "channel": CHANNEL, "chaincode": CHAINCODE, "package_id": self.state.package_id,
                "running": all(procs.values())}

    def channel_height(self, org: str = "org1") -> int:
        out = self._run([str(self.bin / "peer"), "channel", "getinfo", "-c", CHANNEL], env=self._peer_env(org),
                        what="peer channel getinfo")
        info, _ = json.JSONDecoder().raw_decode(out.split("Blockchain info:", 1)[1].strip())
        return int(info["height"])



def _proc_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(") ", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(data))

