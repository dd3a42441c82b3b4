//! An MLS member on Logos's stack (OpenMLS 0.8.1 + openmls_libcrux_crypto 0.3.1, its
//! in-memory storage, suite 0x004D), for `mls-provider/tests/logos_interop.rs`.
//!
//! One process is one member in one group. Protocol: one request per line on stdin,
//! `COMMAND [ARG...]` with binary arguments in hex, lists comma-separated; one answer per
//! line on stdout, `OK [hex]` or `ERR message`. The member's name is the first argument.
//!
//! | command | argument | answer |
//! |---|---|---|
//! | `key_package` | - | serialized KeyPackage (MlsMessage) |
//! | `create_group` | - | - |
//! | `join` | Welcome | - |
//! | `add` | KeyPackages | commit, Welcome (two hex values, comma-separated) |
//! | `self_update` / `remove` (leaf indices, decimal) | | commit |
//! | `send` | plaintext | MlsMessage |
//! | `process` | MlsMessage | `app:<hex>`, `commit`, `removed` or `proposal` (hex of the text) |
//! | `epoch`, `leaf_index`, `member_count` | - | decimal, as hex of the text |
//! | `group_id`, `epoch_authenticator`, `exporter` | - | bytes |
//! | `leaf_of` | name | decimal or empty |
//! | `keys` | - | Ed25519 private, public |
//! | `leave` | - | - |

use std::io::{BufRead, Write};

use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls_libcrux_crypto::Provider;
use openmls_traits::OpenMlsProvider;
use openmls_traits::crypto::OpenMlsCrypto;
use openmls_traits::signatures::{Signer, SignerError};

/// The suite Logos runs.
const SUITE: Ciphersuite = Ciphersuite::MLS_256_XWING_CHACHA20POLY1305_SHA256_Ed25519;

/// An Ed25519 key signed through the libcrux 0.3.1 provider.
struct RawSigner<'a> {
    provider: &'a Provider,
    private: &'a [u8],
}

impl Signer for RawSigner<'_> {
    fn sign(&self, payload: &[u8]) -> Result<Vec<u8>, SignerError> {
        self.provider
            .crypto()
            .sign(SignatureScheme::ED25519, payload, self.private)
            .map_err(SignerError::CryptoError)
    }

    fn signature_scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

struct Member {
    provider: Provider,
    private: Vec<u8>,
    public: Vec<u8>,
    credential: CredentialWithKey,
    group: Option<MlsGroup>,
}

type R<T> = Result<T, String>;

fn err<E: std::fmt::Debug>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e:?}")
}

fn ser(m: &MlsMessageOut) -> R<Vec<u8>> {
    m.tls_serialize_detached().map_err(err("serialize"))
}

fn capabilities() -> Capabilities {
    Capabilities::new(None, Some(&[SUITE]), None, None, None)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> R<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return Err("odd hex length".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2).unwrap_or("zz"), 16).map_err(err("hex")))
        .collect()
}

impl Member {
    fn new(name: &str) -> R<Self> {
        let provider = Provider::new().map_err(err("provider"))?;
        let (private, public) = provider
            .crypto()
            .signature_key_gen(SignatureScheme::ED25519)
            .map_err(err("keygen"))?;
        let credential = CredentialWithKey {
            credential: BasicCredential::new(name.as_bytes().to_vec()).into(),
            signature_key: public.clone().into(),
        };
        Ok(Member {
            provider,
            private,
            public,
            credential,
            group: None,
        })
    }

    fn signer(&self) -> RawSigner<'_> {
        RawSigner {
            provider: &self.provider,
            private: &self.private,
        }
    }

    fn group(&self) -> R<&MlsGroup> {
        self.group.as_ref().ok_or_else(|| "not in a group".into())
    }

    fn handle(&mut self, cmd: &str, arg: &str) -> R<Vec<u8>> {
        let signer = RawSigner {
            provider: &self.provider,
            private: &self.private,
        };
        match cmd {
            "key_package" => {
                let bundle = KeyPackage::builder()
                    .leaf_node_capabilities(capabilities())
                    .build(SUITE, &self.provider, &signer, self.credential.clone())
                    .map_err(err("key package"))?;
                ser(&MlsMessageOut::from(bundle.key_package().clone()))
            }
            "create_group" => {
                let group = MlsGroup::builder()
                    .ciphersuite(SUITE)
                    .use_ratchet_tree_extension(true)
                    .with_capabilities(capabilities())
                    .build(&self.provider, &signer, self.credential.clone())
                    .map_err(err("create group"))?;
                self.group = Some(group);
                Ok(Vec::new())
            }
            "join" => {
                let msg =
                    MlsMessageIn::tls_deserialize_exact(unhex(arg)?).map_err(err("decode"))?;
                let MlsMessageBodyIn::Welcome(welcome) = msg.extract() else {
                    return Err("not a welcome".into());
                };
                let config = MlsGroupJoinConfig::builder()
                    .use_ratchet_tree_extension(true)
                    .build();
                let staged =
                    StagedWelcome::new_from_welcome(&self.provider, &config, welcome, None)
                        .map_err(err("welcome"))?;
                self.group = Some(staged.into_group(&self.provider).map_err(err("join"))?);
                Ok(Vec::new())
            }
            "add" => {
                let mut kps = Vec::new();
                for h in arg.split(',') {
                    let m =
                        MlsMessageIn::tls_deserialize_exact(unhex(h)?).map_err(err("decode"))?;
                    let MlsMessageBodyIn::KeyPackage(kp) = m.extract() else {
                        return Err("not a key package".into());
                    };
                    kps.push(
                        kp.validate(self.provider.crypto(), ProtocolVersion::Mls10)
                            .map_err(err("key package"))?,
                    );
                }
                let group = self.group.as_mut().ok_or("not in a group")?;
                let (commit, welcome, _) = group
                    .add_members(&self.provider, &signer, &kps)
                    .map_err(err("add"))?;
                group
                    .merge_pending_commit(&self.provider)
                    .map_err(err("merge"))?;
                Ok(format!("{},{}", hex(&ser(&commit)?), hex(&ser(&welcome)?)).into_bytes())
            }
            "self_update" => {
                let group = self.group.as_mut().ok_or("not in a group")?;
                let bundle = group
                    .self_update(&self.provider, &signer, LeafNodeParameters::default())
                    .map_err(err("self update"))?;
                group
                    .merge_pending_commit(&self.provider)
                    .map_err(err("merge"))?;
                ser(bundle.commit())
            }
            "remove" => {
                let idx = arg
                    .split(',')
                    .map(|i| {
                        i.parse::<u32>()
                            .map(LeafNodeIndex::new)
                            .map_err(err("index"))
                    })
                    .collect::<R<Vec<_>>>()?;
                let group = self.group.as_mut().ok_or("not in a group")?;
                let (commit, _, _) = group
                    .remove_members(&self.provider, &signer, &idx)
                    .map_err(err("remove"))?;
                group
                    .merge_pending_commit(&self.provider)
                    .map_err(err("merge"))?;
                ser(&commit)
            }
            "send" => {
                let group = self.group.as_mut().ok_or("not in a group")?;
                let m = group
                    .create_message(&self.provider, &signer, &unhex(arg)?)
                    .map_err(err("send"))?;
                ser(&m)
            }
            "process" => {
                let m = MlsMessageIn::tls_deserialize_exact(unhex(arg)?).map_err(err("decode"))?;
                let pm = m
                    .try_into_protocol_message()
                    .map_err(err("not a protocol message"))?;
                let group = self.group.as_mut().ok_or("not in a group")?;
                let processed = group
                    .process_message(&self.provider, pm)
                    .map_err(err("process"))?;
                Ok(match processed.into_content() {
                    ProcessedMessageContent::ApplicationMessage(a) => {
                        format!("app:{}", hex(&a.into_bytes())).into_bytes()
                    }
                    ProcessedMessageContent::StagedCommitMessage(sc) => {
                        let removed = sc.self_removed();
                        group
                            .merge_staged_commit(&self.provider, *sc)
                            .map_err(err("merge"))?;
                        if removed {
                            b"removed".to_vec()
                        } else {
                            b"commit".to_vec()
                        }
                    }
                    _ => b"proposal".to_vec(),
                })
            }
            "epoch" => Ok(self.group()?.epoch().as_u64().to_string().into_bytes()),
            "leaf_index" => Ok(self
                .group()?
                .own_leaf_index()
                .u32()
                .to_string()
                .into_bytes()),
            "member_count" => Ok(self.group()?.members().count().to_string().into_bytes()),
            "group_id" => Ok(self.group()?.group_id().as_slice().to_vec()),
            "epoch_authenticator" => Ok(self.group()?.epoch_authenticator().as_slice().to_vec()),
            "exporter" => self
                .group()?
                .export_secret(self.provider.crypto(), "test", b"ctx", 32)
                .map_err(err("export")),
            "leaf_of" => {
                let name = unhex(arg)?;
                Ok(self
                    .group()?
                    .members()
                    .find_map(|m| {
                        let c = BasicCredential::try_from(m.credential).ok()?;
                        (c.identity() == name.as_slice()).then_some(m.index.u32())
                    })
                    .map(|i| i.to_string())
                    .unwrap_or_default()
                    .into_bytes())
            }
            "keys" => Ok(format!("{},{}", hex(&self.private), hex(&self.public)).into_bytes()),
            "leave" => {
                if let Some(mut g) = self.group.take() {
                    g.delete(self.provider.storage()).map_err(err("delete"))?;
                }
                Ok(Vec::new())
            }
            other => Err(format!("unknown command {other}")),
        }
    }
}

fn main() {
    let name = std::env::args().nth(1).unwrap_or_else(|| "logos".into());
    let mut member = match Member::new(&name) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let _ = member.signer();
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let (cmd, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let answer = match member.handle(cmd, arg) {
            Ok(b) => format!("OK {}", hex(&b)),
            Err(e) => format!("ERR {}", e.replace('\n', " ")),
        };
        if writeln!(out, "{answer}")
            .and_then(|()| out.flush())
            .is_err()
        {
            break;
        }
    }
}
