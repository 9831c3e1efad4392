//! SCAFFOLD: to be written
use async_trait::async_trait;
#[async_trait]
pub trait AuthorizationGrantRepository: Send {}
#[async_trait]
pub trait ConsentRepository: Send {}
#[async_trait]
pub trait DeviceCodeGrantRepository: Send {}
macro_rules! implementation {
    ($r:ty) => {
        impl AuthorizationGrantRepository for $r {}
        impl ConsentRepository for $r {}
        impl DeviceCodeGrantRepository for $r {}
    };
}
super::for_each_backend!(implementation);
