//! SCAFFOLD: to be written
use async_trait::async_trait;
#[async_trait]
pub trait ClientRepository: Send {}
macro_rules! implementation {
    ($r:ty) => {
        impl ClientRepository for $r {}
    };
}
super::for_each_backend!(implementation);
