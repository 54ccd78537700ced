//! User verification after Approve and before the keystore signs (the seeds' Face ID
//! step): a PAM conversation with service `vmux` (configurable), so the user's own PAM
//! stack decides: pam_unix asks for the password, pam_fprintd for a finger, pam_u2f for
//! a security-key touch.
//!
//! libpam is loaded at run time (`dlopen("libpam.so.0")`), so vmux builds and runs on
//! machines without PAM's development files; a signer configured for PAM without libpam
//! refuses to sign (`presenceFailed`) rather than skip the step.
//!
//! The conversation is answered from what the deciding surface collected before it
//! approved (the password typed at the CLI, sheet, prompt or askpass): one answer per
//! hidden prompt, in order; informational messages are logged. A stack that asks more
//! than was collected fails, which fails closed.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use zeroize::Zeroizing;

const PAM_SUCCESS: c_int = 0;
const PAM_CONV_ERR: c_int = 19;
const PAM_BUF_ERR: c_int = 5;
const PAM_PROMPT_ECHO_OFF: c_int = 1;
const PAM_PROMPT_ECHO_ON: c_int = 2;
const PAM_ERROR_MSG: c_int = 3;
const PAM_TEXT_INFO: c_int = 4;

#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    resp_retcode: c_int,
}

#[repr(C)]
struct PamConv {
    conv: extern "C" fn(c_int, *mut *const PamMessage, *mut *mut PamResponse, *mut c_void) -> c_int,
    appdata: *mut c_void,
}

type PamStart =
    unsafe extern "C" fn(*const c_char, *const c_char, *const PamConv, *mut *mut c_void) -> c_int;
type PamCall = unsafe extern "C" fn(*mut c_void, c_int) -> c_int;
type PamStrerror = unsafe extern "C" fn(*mut c_void, c_int) -> *const c_char;

/// Why verification did not pass, in words for the log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    #[error("PAM is not available on this system ({0}); install libpam0g")]
    NoPam(String),
    #[error("PAM service {service:?} refused user {user:?}: {reason}")]
    Refused {
        service: String,
        user: String,
        reason: String,
    },
}

struct Answers {
    hidden: Vec<Zeroizing<String>>,
    next: usize,
}

extern "C" fn converse(
    n: c_int,
    msgs: *mut *const PamMessage,
    out: *mut *mut PamResponse,
    appdata: *mut c_void,
) -> c_int {
    if n <= 0 || n > 32 || msgs.is_null() || out.is_null() || appdata.is_null() {
        return PAM_CONV_ERR;
    }
    // SAFETY: PAM passes `n` messages and an out-pointer, and our own Answers as appdata
    // (set in `pam`); responses are calloc'd because PAM frees them with free().
    unsafe {
        let answers = &mut *(appdata as *mut Answers);
        let resp = libc::calloc(n as usize, std::mem::size_of::<PamResponse>()) as *mut PamResponse;
        if resp.is_null() {
            return PAM_BUF_ERR;
        }
        for i in 0..n as usize {
            // Linux-PAM passes an array of pointers to messages.
            let m = &**msgs.add(i);
            let text = if m.msg.is_null() {
                String::new()
            } else {
                CStr::from_ptr(m.msg).to_string_lossy().into_owned()
            };
            match m.msg_style {
                PAM_PROMPT_ECHO_OFF | PAM_PROMPT_ECHO_ON => {
                    let Some(a) = answers.hidden.get(answers.next) else {
                        tracing::warn!("PAM asked {text:?} but nothing more was collected");
                        free_responses(resp, i);
                        return PAM_CONV_ERR;
                    };
                    answers.next += 1;
                    let Ok(c) = CString::new(a.as_bytes()) else {
                        free_responses(resp, i);
                        return PAM_CONV_ERR;
                    };
                    (*resp.add(i)).resp = libc::strdup(c.as_ptr());
                    let mut bytes = c.into_bytes();
                    zeroize::Zeroize::zeroize(&mut bytes);
                }
                PAM_ERROR_MSG | PAM_TEXT_INFO => tracing::info!("PAM: {text}"),
                _ => {
                    free_responses(resp, i);
                    return PAM_CONV_ERR;
                }
            }
        }
        *out = resp;
    }
    PAM_SUCCESS
}

/// Free the first `filled` responses and the array (on a failed conversation).
unsafe fn free_responses(resp: *mut PamResponse, filled: usize) {
    for j in 0..filled {
        let r = (*resp.add(j)).resp;
        if !r.is_null() {
            libc::memset(r.cast(), 0, libc::strlen(r));
            libc::free(r.cast());
        }
    }
    libc::free(resp.cast());
}

unsafe fn symbol<T: Copy>(lib: *mut c_void, name: &CStr) -> Result<T, VerifyError> {
    let p = libc::dlsym(lib, name.as_ptr());
    if p.is_null() {
        return Err(VerifyError::NoPam(format!("no {}", name.to_string_lossy())));
    }
    Ok(std::mem::transmute_copy(&p))
}

/// Run `service`'s auth and account stacks for `user`, answering hidden prompts with
/// `answers` in order. Blocking: call it off the async runtime.
pub fn pam(service: &str, user: &str, answers: Vec<Zeroizing<String>>) -> Result<(), VerifyError> {
    let refused = |reason: String| VerifyError::Refused {
        service: service.to_string(),
        user: user.to_string(),
        reason,
    };
    let (c_service, c_user) = (
        CString::new(service).map_err(|_| refused("bad service name".into()))?,
        CString::new(user).map_err(|_| refused("bad user name".into()))?,
    );
    // SAFETY: dlopen/dlsym of libpam's documented entry points with their C signatures;
    // the handle lives until pam_end, the conversation data outlives every call.
    unsafe {
        let lib = libc::dlopen(c"libpam.so.0".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if lib.is_null() {
            return Err(VerifyError::NoPam("libpam.so.0 not found".into()));
        }
        let start: PamStart = symbol(lib, c"pam_start")?;
        let authenticate: PamCall = symbol(lib, c"pam_authenticate")?;
        let acct: PamCall = symbol(lib, c"pam_acct_mgmt")?;
        let end: PamCall = symbol(lib, c"pam_end")?;
        let strerror: PamStrerror = symbol(lib, c"pam_strerror")?;
        let mut data = Answers {
            hidden: answers,
            next: 0,
        };
        let conv = PamConv {
            conv: converse,
            appdata: &mut data as *mut Answers as *mut c_void,
        };
        let mut h: *mut c_void = std::ptr::null_mut();
        let rc = start(c_service.as_ptr(), c_user.as_ptr(), &conv, &mut h);
        if rc != PAM_SUCCESS || h.is_null() {
            return Err(refused(format!("pam_start failed ({rc})")));
        }
        let mut rc = authenticate(h, 0);
        if rc == PAM_SUCCESS {
            rc = acct(h, 0);
        }
        let why = if rc == PAM_SUCCESS {
            None
        } else {
            let s = strerror(h, rc);
            Some(if s.is_null() {
                format!("error {rc}")
            } else {
                CStr::from_ptr(s).to_string_lossy().into_owned()
            })
        };
        end(h, rc);
        match why {
            None => Ok(()),
            Some(w) => Err(refused(w)),
        }
    }
}

/// The user PAM verifies by default: the one the signer runs as.
pub fn current_user() -> String {
    // SAFETY: getpwuid returns a pointer into static storage or null; read it at once.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() {
            return "root".into();
        }
        CStr::from_ptr((*pw).pw_name).to_string_lossy().into_owned()
    }
}
