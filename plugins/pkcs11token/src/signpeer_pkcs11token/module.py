"""One loaded PKCS#11 module per shared library path, and the lock that serializes its calls.

python-pkcs11 0.10 initializes a module with ``C_Initialize(NULL)``, which tells the module
that the application will not call it from several threads at once (SoftHSM2 then disables
its own mutexes), yet python-pkcs11 releases the GIL around every call. Two threads inside
the module at the same time crash the process (see docs: platform notes). So every PKCS#11
call a process makes into one library goes through :attr:`Pkcs11Module.lock`, shared by all
token instances that use that library.

A lock rather than a dedicated thread: the callers (signers) already run in worker threads,
and an uncontended lock costs about a microsecond where a hand-off to another thread costs
tens, which matters next to a 90 µs ECDSA signature. The GIL is released while the module
works, so the event loop and other threads keep running.

python-pkcs11 has no ``C_Login`` on an open session and leaks the session it opened when
``Token.open(user_pin=...)`` fails, and offers no ``C_GetSessionInfo``. :class:`RawFunctions`
calls those few functions through the module's own function list with ctypes.
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import pkcs11

from signpeer_core.api import CryptoTokenOfflineError

# CK_RV values used here (PKCS#11 2.40 §11.1).
CKR_OK = 0x000
CKR_DEVICE_REMOVED = 0x032
CKR_PIN_INCORRECT = 0x0A0
CKR_PIN_LEN_RANGE = 0x0A2
CKR_PIN_EXPIRED = 0x0A3
CKR_PIN_LOCKED = 0x0A4
CKR_SESSION_CLOSED = 0x0B0
CKR_SESSION_HANDLE_INVALID = 0x0B3
CKR_TOKEN_NOT_PRESENT = 0x0E0
CKR_USER_ALREADY_LOGGED_IN = 0x100
CKR_USER_NOT_LOGGED_IN = 0x101
CKR_USER_PIN_NOT_INITIALIZED = 0x102
CKR_CRYPTOKI_NOT_INITIALIZED = 0x190

CKU_USER = 1
# CK_STATE values of logged-in user sessions.
CKS_RO_USER_FUNCTIONS = 1
CKS_RW_USER_FUNCTIONS = 3

RV_NAMES = {
    CKR_DEVICE_REMOVED: "CKR_DEVICE_REMOVED", CKR_PIN_INCORRECT: "CKR_PIN_INCORRECT",
    CKR_PIN_LEN_RANGE: "CKR_PIN_LEN_RANGE", CKR_PIN_EXPIRED: "CKR_PIN_EXPIRED", CKR_PIN_LOCKED: "CKR_PIN_LOCKED",
    CKR_SESSION_CLOSED: "CKR_SESSION_CLOSED", CKR_SESSION_HANDLE_INVALID: "CKR_SESSION_HANDLE_INVALID",
    CKR_TOKEN_NOT_PRESENT: "CKR_TOKEN_NOT_PRESENT", CKR_USER_ALREADY_LOGGED_IN: "CKR_USER_ALREADY_LOGGED_IN",
    CKR_USER_NOT_LOGGED_IN: "CKR_USER_NOT_LOGGED_IN", CKR_USER_PIN_NOT_INITIALIZED: "CKR_USER_PIN_NOT_INITIALIZED",
    CKR_CRYPTOKI_NOT_INITIALIZED: "CKR_CRYPTOKI_NOT_INITIALIZED",
}


def rv_name(rv: int) -> str:
    return RV_NAMES.get(rv, f"CKR 0x{rv:08X}")


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_ubyte), ("minor", ctypes.c_ubyte)]


# The first 20 entries of CK_FUNCTION_LIST, in the order the standard fixes (§5.x).
_FUNCTION_NAMES = (
    "C_Initialize", "C_Finalize", "C_GetInfo", "C_GetFunctionList", "C_GetSlotList", "C_GetSlotInfo",
    "C_GetTokenInfo", "C_GetMechanismList", "C_GetMechanismInfo", "C_InitToken", "C_InitPIN", "C_SetPIN",
    "C_OpenSession", "C_CloseSession", "C_CloseAllSessions", "C_GetSessionInfo", "C_GetOperationState",
    "C_SetOperationState", "C_Login", "C_Logout",
)


class _FunctionList(ctypes.Structure):
    _fields_ = [("version", _Version)] + [(name, ctypes.c_void_p) for name in _FUNCTION_NAMES]


class _SessionInfo(ctypes.Structure):
    _fields_ = [("slotID", ctypes.c_ulong), ("state", ctypes.c_ulong), ("flags", ctypes.c_ulong),
                ("ulDeviceError", ctypes.c_ulong)]


_ULONG = ctypes.c_ulong


class RawFunctions:
    """``C_Login``/``C_Logout``/``C_GetSessionInfo``/``C_CloseSession`` through the module's
    function list. dlopen() hands back the instance python-pkcs11 already initialized."""

    def __init__(self, path: str) -> None:
        self._dll = ctypes.CDLL(path)
        get_list = self._dll.C_GetFunctionList
        get_list.restype = _ULONG
        get_list.argtypes = [ctypes.POINTER(ctypes.POINTER(_FunctionList))]
        ptr = ctypes.POINTER(_FunctionList)()
        rv = get_list(ctypes.byref(ptr))
        if rv != CKR_OK:
            raise pkcs11.PKCS11Error(f"C_GetFunctionList failed: {rv_name(rv)}")
        fl = ptr.contents
        proto = ctypes.CFUNCTYPE
        self.C_Login = proto(_ULONG, _ULONG, _ULONG, ctypes.c_char_p, _ULONG)(fl.C_Login)
        self.C_Logout = proto(_ULONG, _ULONG)(fl.C_Logout)
        self.C_CloseSession = proto(_ULONG, _ULONG)(fl.C_CloseSession)
        self.C_GetSessionInfo = proto(_ULONG, _ULONG, ctypes.POINTER(_SessionInfo))(fl.C_GetSessionInfo)

    def login(self, session_handle: int, pin: str) -> int:
        data = pin.encode("utf-8")
        return int(self.C_Login(session_handle, CKU_USER, data, len(data)))

    def logout(self, session_handle: int) -> int:
        return int(self.C_Logout(session_handle))

    def close_session(self, session_handle: int) -> int:
        return int(self.C_CloseSession(session_handle))

    def session_info(self, session_handle: int) -> tuple[int, int, int] | None:
        """(slot id, state, flags) of an open session; None when the handle is not a session."""
        info = _SessionInfo()
        rv = self.C_GetSessionInfo(session_handle, ctypes.byref(info))
        if rv != CKR_OK:
            return None
        return int(info.slotID), int(info.state), int(info.flags)


@dataclass
class Pkcs11Module:
    """A loaded and initialized PKCS#11 library, shared by every token of the process using it."""

    path: str
    lib: Any
    raw: RawFunctions
    #: Held around every call into the library (see the module docstring). Re-entrant so that
    #: a token operation can call helpers that take it again.
    lock: threading.RLock = field(default_factory=threading.RLock)
    #: PIN that last logged in to each slot of this process. Login state is per token and
    #: process, so checking another instance's PIN means logging out everyone; this lets the
    #: module log the earlier user back in when the new PIN is wrong.
    logged_in: dict[int, str] = field(default_factory=dict)
    #: Sessions the tokens of this process hold open per slot; the login ends with the last.
    open_sessions: dict[int, int] = field(default_factory=dict)


_modules: dict[str, Pkcs11Module] = {}
_modules_lock = threading.Lock()


class ModuleLoadError(CryptoTokenOfflineError):
    """The shared library could not be loaded or initialized; the message says why."""


def load_module(path: str) -> Pkcs11Module:
    """The process-wide :class:`Pkcs11Module` for ``path``, loading it on first use."""
    key = os.path.realpath(path)
    with _modules_lock:
        module = _modules.get(key)
        if module is not None:
            return module
        if not os.path.exists(path):
            raise ModuleLoadError(f"the PKCS#11 module {path} does not exist")
        if not os.access(path, os.R_OK):
            raise ModuleLoadError(f"the PKCS#11 module {path} is not readable by this process")
        try:
            lib = pkcs11.lib(path)
            raw = RawFunctions(path)
        except (pkcs11.PKCS11Error, OSError, AttributeError) as exc:
            raise ModuleLoadError(f"the PKCS#11 module {path} cannot be loaded: {type(exc).__name__}: {exc}") from exc
        module = Pkcs11Module(path=path, lib=lib, raw=raw)
        _modules[key] = module
        return module


def count_open_sessions(module: Pkcs11Module, max_handle: int) -> int:
    """Sessions of this process that the module reports open among handles 1..max_handle.

    For tests: SoftHSM2 reports ``ulSessionCount`` as unavailable, so sessions are counted by
    asking ``C_GetSessionInfo`` about each handle.
    """
    with module.lock:
        return sum(1 for h in range(1, max_handle + 1) if module.raw.session_info(h) is not None)
