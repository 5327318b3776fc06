//! The controller's errors: the Kubernetes call that failed, or a BeeOS failure on its way to
//! being folded into the resource's status (see `controller::status::Problem`).

/// A reconcile that could not finish; the controller retries it soon.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the resource has no namespace (BeeosInstance is namespaced)")]
    NotNamespaced,
    #[error("reading a Secret: {0}")]
    ReadSecret(#[source] kube::Error),
    #[error("writing the status: {0}")]
    WriteStatus(#[source] kube::Error),
    #[error("updating the finalizer: {0}")]
    WriteFinalizer(#[source] kube::Error),
    #[error("writing annotations: {0}")]
    WriteAnnotations(#[source] kube::Error),
    #[error("writing the connection ConfigMap: {0}")]
    WriteConnection(#[source] kube::Error),
    /// Never leaves a reconcile: the driver turns it into conditions and a requeue.
    #[error(transparent)]
    Beeos(#[from] crate::beeos::Error),
}

impl Error {
    /// A static CamelCase reason for metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::NotNamespaced => "NotNamespaced",
            Error::ReadSecret(_) => "ReadSecretFailed",
            Error::WriteStatus(_) => "WriteStatusFailed",
            Error::WriteFinalizer(_) => "WriteFinalizerFailed",
            Error::WriteAnnotations(_) => "WriteAnnotationsFailed",
            Error::WriteConnection(_) => "WriteConnectionFailed",
            Error::Beeos(err) => err.reason(),
        }
    }
}
