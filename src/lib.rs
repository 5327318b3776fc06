//! beeos-operator: runs BeeOS AI-agent instances from `BeeosInstance` resources.
