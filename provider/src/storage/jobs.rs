//! SCAFFOLD: to be written
use async_trait::async_trait;
#[async_trait]
pub trait JobRepository: Send {}
macro_rules! implementation {
    ($r:ty) => {
        impl JobRepository for $r {}
    };
}
super::for_each_backend!(implementation);
