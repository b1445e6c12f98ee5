//! What the controller and the speaker keep of the objects they watch.

use kube::Resource;

/// kubectl's copy of the last applied manifest: a second, stale copy of the object.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops the metadata neither component reads but every cached object would otherwise carry:
/// the managed fields (often larger than the rest of the object) and kubectl's last applied
/// manifest. With thousands of Services these dominate the caches' memory.
pub fn trim_metadata<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove(LAST_APPLIED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    #[test]
    fn keeps_what_is_read_and_drops_the_rest() {
        let mut service = Service::default();
        service.metadata.name = Some("web".into());
        service.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        service.metadata.annotations = Some(
            [
                (LAST_APPLIED.to_owned(), "{}".to_owned()),
                (
                    "ferrolb.io/loadBalancerIPs".to_owned(),
                    "198.51.100.7".to_owned(),
                ),
            ]
            .into(),
        );
        trim_metadata(&mut service);
        assert_eq!(service.metadata.managed_fields, None);
        assert_eq!(service.metadata.name.as_deref(), Some("web"));
        let annotations = service.metadata.annotations.unwrap_or_default();
        assert_eq!(
            annotations.keys().collect::<Vec<_>>(),
            ["ferrolb.io/loadBalancerIPs"]
        );
    }
}
