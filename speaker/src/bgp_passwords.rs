//! Reads the Secrets BGPPeers take their TCP MD5 passwords from, in the speakers' namespace: each
//! by name (`get` only, so the speaker cannot list the namespace's other Secrets), again whenever
//! the set of names changes and every [`REREAD_INTERVAL`], so a changed password reaches the
//! sessions.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use tokio::sync::{mpsc, watch};

use crate::bgp_speaker::Passwords;

pub const REREAD_INTERVAL: Duration = Duration::from_secs(30);

async fn read(api: &Api<Secret>, names: &BTreeSet<String>) -> Passwords {
    let mut passwords = Passwords::new();
    for name in names {
        let result = match api.get_opt(name).await {
            Ok(Some(secret)) => Ok(secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(key, value)| (key, value.0))
                .chain(
                    secret
                        .string_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(key, value)| (key, value.into_bytes())),
                )
                .collect::<BTreeMap<_, _>>()),
            Ok(None) => Err(format!(
                "no such Secret in namespace {}",
                api.namespace().unwrap_or("")
            )),
            Err(error) => {
                tracing::warn!(secret = %name, %error, "reading a BGP password Secret failed");
                Err(format!("cannot read it: {error}"))
            }
        };
        passwords.insert(name.clone(), result);
    }
    passwords
}

/// Sends what the Secrets named in `names` hold to `out`, until either side closes.
pub async fn follow(
    api: Api<Secret>,
    mut names: watch::Receiver<BTreeSet<String>>,
    out: mpsc::UnboundedSender<Passwords>,
) {
    loop {
        let wanted = names.borrow_and_update().clone();
        if out.send(read(&api, &wanted).await).is_err() {
            return;
        }
        tokio::select! {
            changed = names.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(REREAD_INTERVAL) => {}
        }
    }
}
