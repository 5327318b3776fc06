//! The controller's errors: Kubernetes calls that failed. BeeOS failures are not here: the
//! controller folds them into the resource's status (see `controller::status::Problem`).

/// A reconcile that could not finish; the controller retries it soon.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the resource has no namespace (BeeosInstance is namespaced)")]
    NotNamespaced,
    #[error("reading the credentials Secret: {0}")]
    ReadCredentials(#[source] kube::Error),
    #[error("writing the status: {0}")]
    WriteStatus(#[source] kube::Error),
    #[error("updating the finalizer: {0}")]
    WriteFinalizer(#[source] kube::Error),
    #[error("writing annotations: {0}")]
    WriteAnnotations(#[source] kube::Error),
}

impl Error {
    /// A static CamelCase reason for metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::NotNamespaced => "NotNamespaced",
            Error::ReadCredentials(_) => "ReadCredentialsFailed",
            Error::WriteStatus(_) => "WriteStatusFailed",
            Error::WriteFinalizer(_) => "WriteFinalizerFailed",
            Error::WriteAnnotations(_) => "WriteAnnotationsFailed",
        }
    }
}
