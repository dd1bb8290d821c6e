//! Block device mappings, converted in one place. EC2 answers them in two shapes (a
//! launch template's, an image's) and Auto Scaling in a third (a launch configuration's);
//! all three name a device and, for an EBS volume, whether it is encrypted, with which key
//! and from which snapshot. [`mappings`] reads any of them as plain [`Mapping`]s, and
//! [`with_key`] writes a launch template's back as a request with another key.

use aws_sdk_ec2::types::{
    LaunchTemplateBlockDeviceMapping, LaunchTemplateBlockDeviceMappingRequest, LaunchTemplateEbsBlockDeviceRequest,
};

use crate::core::launch::Mapping;
use crate::core::model::KeyArn;

/// The EBS part of a mapping, as the SDK answers it.
pub(super) struct Volume<'a> {
    encrypted: Option<bool>,
    key: Option<&'a str>,
    snapshot: Option<&'a str>,
}

/// A block device mapping in any of the SDK's shapes.
pub(super) trait SdkMapping {
    fn device(&self) -> Option<&str>;
    /// None for a mapping with no EBS volume (an instance store volume, or no device).
    fn volume(&self) -> Option<Volume<'_>>;
}

macro_rules! sdk_mapping {
    ($t:ty, |$ebs:ident| $key:expr) => {
        impl SdkMapping for $t {
            fn device(&self) -> Option<&str> {
                self.device_name()
            }
            fn volume(&self) -> Option<Volume<'_>> {
                self.ebs().map(|$ebs| Volume { encrypted: $ebs.encrypted(), key: $key, snapshot: $ebs.snapshot_id() })
            }
        }
    };
}

sdk_mapping!(LaunchTemplateBlockDeviceMapping, |ebs| ebs.kms_key_id());
sdk_mapping!(aws_sdk_ec2::types::BlockDeviceMapping, |ebs| ebs.kms_key_id());
// Launch configurations cannot name a key: an encrypted volume uses the snapshot's key or
// the account's default.
sdk_mapping!(aws_sdk_autoscaling::types::BlockDeviceMapping, |_ebs| None);

/// The EBS mappings of a launch template version, a launch configuration or an image, as
/// plain data; mappings without an EBS volume are left out.
pub(super) fn mappings<M: SdkMapping>(all: &[M]) -> Vec<Mapping> {
    all.iter()
        .filter_map(|m| {
            let volume = m.volume()?;
            Some(Mapping {
                device: m.device().unwrap_or("?").to_owned(),
                encrypted: volume.encrypted,
                kms_key_id: volume.key.map(str::to_owned),
                snapshot_id: volume.snapshot.map(str::to_owned),
            })
        })
        .collect()
}

/// A launch template version's mappings as a request that writes them again, each field as
/// read (every field EC2 answers, so none is dropped: a new field of the SDK's shape
/// must be added here, and the test below names them all), but with `key` (and
/// encryption) for the volumes of `devices`.
pub(super) fn with_key(
    all: &[LaunchTemplateBlockDeviceMapping],
    devices: &[String],
    key: &KeyArn,
) -> Vec<LaunchTemplateBlockDeviceMappingRequest> {
    all.iter()
        .map(|m| {
            let device = m.device_name().unwrap_or_default();
            let ebs = m.ebs().map(|e| {
                let named = devices.iter().any(|d| d == device);
                LaunchTemplateEbsBlockDeviceRequest::builder()
                    .set_encrypted(if named { Some(true) } else { e.encrypted() })
                    .set_delete_on_termination(e.delete_on_termination())
                    .set_iops(e.iops())
                    .set_kms_key_id(if named { Some(key.to_string()) } else { e.kms_key_id().map(str::to_owned) })
                    .set_snapshot_id(e.snapshot_id().map(str::to_owned))
                    .set_volume_size(e.volume_size())
                    .set_volume_type(e.volume_type().cloned())
                    .set_throughput(e.throughput())
                    .set_volume_initialization_rate(e.volume_initialization_rate())
                    .set_ebs_card_index(e.ebs_card_index())
                    .build()
            });
            LaunchTemplateBlockDeviceMappingRequest::builder()
                .set_device_name(m.device_name().map(str::to_owned))
                .set_virtual_name(m.virtual_name().map(str::to_owned))
                .set_no_device(m.no_device().map(str::to_owned))
                .set_ebs(ebs)
                .build()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use aws_sdk_ec2::types::{LaunchTemplateEbsBlockDevice, VolumeType};

    use super::*;

    #[test]
    fn a_mapping_is_written_again_whole_with_only_the_key_changed() {
        let ebs = LaunchTemplateEbsBlockDevice::builder()
            .encrypted(true)
            .delete_on_termination(false)
            .iops(4000)
            .kms_key_id("arn:aws:kms:us-west-2:444455556666:key/22222222-2222-2222-2222-222222222222")
            .snapshot_id("snap-0abc")
            .volume_size(100)
            .volume_type(VolumeType::Gp3)
            .throughput(250)
            .volume_initialization_rate(300)
            .ebs_card_index(1)
            .build();
        let read = LaunchTemplateBlockDeviceMapping::builder().device_name("/dev/xvda").ebs(ebs).build();
        let other =
            LaunchTemplateBlockDeviceMapping::builder().device_name("/dev/sdb").virtual_name("ephemeral0").build();
        let key = KeyArn::parse("arn:aws:kms:us-west-2:111122223333:key/11111111-1111-1111-1111-111111111111").unwrap();
        let out = with_key(&[read, other], &["/dev/xvda".to_owned()], &key);
        let e = out[0].ebs().unwrap();
        assert_eq!(e.kms_key_id(), Some(key.as_str()));
        assert_eq!((e.encrypted(), e.delete_on_termination()), (Some(true), Some(false)));
        assert_eq!((e.iops(), e.volume_size(), e.throughput()), (Some(4000), Some(100), Some(250)));
        assert_eq!((e.snapshot_id(), e.volume_type()), (Some("snap-0abc"), Some(&VolumeType::Gp3)));
        assert_eq!((e.volume_initialization_rate(), e.ebs_card_index()), (Some(300), Some(1)));
        assert_eq!((out[1].device_name(), out[1].virtual_name()), (Some("/dev/sdb"), Some("ephemeral0")));
        assert!(out[1].ebs().is_none());
    }
}
