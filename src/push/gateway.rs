//! Delivery of notifications to push gateways.
