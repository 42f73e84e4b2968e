//! The `ptrace` tier where it is not built (it rewrites x86-64 system calls): the doctor
//! never picks it there and refuses it when asked, so nothing reaches a [`Setup`].

use std::ffi::CString;
use std::path::Path;

use nix::unistd::Pid;

use super::failure::HelperError;
use super::user::ResolvedUser;
use super::{ExitStatus, Request};

/// Never made: there is no ptrace tier on this architecture.
pub(crate) enum Setup {}

impl Setup {
    pub(crate) fn new(_request: &Request, _rootfs: &Path) -> Result<Setup, HelperError> {
        Err("the ptrace sandbox tier is built for x86-64 only".into())
    }

    pub(crate) fn user(&self) -> &ResolvedUser {
        match *self {}
    }

    pub(crate) fn find_program(&self, _program: &str, _path_var: &str) -> Option<String> {
        match *self {}
    }

    pub(crate) fn exec(
        &self,
        _program: &str,
        _args: &[CString],
        _env: &[CString],
    ) -> Result<std::convert::Infallible, HelperError> {
        match *self {}
    }

    pub(crate) fn supervise(&self, _child: Pid) -> Result<ExitStatus, HelperError> {
        match *self {}
    }
}
