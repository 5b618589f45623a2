"""Every error Bastion raises: an HTTP status and a stable ``type``, rendered once at the edge."""

from __future__ import annotations

from typing import Any, ClassVar

from bastion.responses import encode
from bastion.secret import Secret


class BastionError(Exception):
    """An error a client can see: JSON ``{"code", "type", "message"}`` with an HTTP status."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "general_unknown"
    default_message: ClassVar[str] = "Server error."

    def __init__(
        self, message: str | None = None, *, headers: dict[str, str] | None = None
    ) -> None:
        self.message = message or self.default_message
        self.headers = headers or {}
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        """The JSON body of this error."""
        return {"code": self.status, "type": self.type, "message": self.message}

    def body(self) -> bytes:
        """The JSON body, encoded as every body Bastion sends."""
        return encode(self.to_dict())


class Unauthorized(BastionError):
    """No valid credential where one is needed, or the credential sent is invalid."""

    status = 401
    type = "user_unauthorized"
    default_message = "The current user is not authorized to perform the requested action."


class SessionInvalid(Unauthorized):
    """A session token that is malformed, forged, expired, evicted or revoked."""

    type = "user_session_invalid"
    default_message = (
        "The session is invalid, expired or revoked. Log in again to get a new session."
    )


class CrossSiteRequest(BastionError):
    """A cookie-authenticated unsafe request that came from another site (CSRF)."""

    status = 403
    type = "general_cross_site_request"
    default_message = (
        "Cross-site request refused: a request that changes state with a session cookie must come "
        "from an allowed origin."
    )


class BadRequest(BastionError):
    """A request Bastion cannot read at all."""

    status = 400
    type = "general_bad_request"
    default_message = "The request is malformed."


class PayloadTooLarge(BastionError):
    """A request body over ``max_body_size``: refused by its Content-Length, or once read so far."""

    status = 413
    type = "general_payload_too_large"
    default_message = "The request body is too large."

    def __init__(self, limit: int | None = None) -> None:
        super().__init__(
            None if limit is None else f"The request body is larger than {limit} bytes."
        )


class UnsupportedMediaType(BastionError):
    """A body sent to Bastion's own routes that is not declared as JSON."""

    status = 415
    type = "general_unsupported_media_type"
    default_message = "The request body must be JSON, sent with Content-Type: application/json."


class ServiceUnavailable(BastionError):
    """The session store cannot be reached; the request is refused rather than let through."""

    status = 503
    type = "service_unavailable"
    default_message = "The authentication service is temporarily unavailable. Try again shortly."
    retry_after: ClassVar[int] = 2
    """Seconds a client should wait: Bastion reconnects by itself, so the outage may be brief."""

    def __init__(
        self, message: str | None = None, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, headers={"Retry-After": str(self.retry_after), **(headers or {})})


class ConfigError(ValueError):
    """A setting with a bad value, raised at start-up with the setting's name and allowed values."""

    def __init__(self, name: str, value: object, allowed: str) -> None:
        self.name = name
        self.value = value
        self.allowed = allowed
        # A secret (a Secret or SecretURL) is shown as its masked text, never its value.
        shown = repr(str(value)) if isinstance(value, Secret) else repr(value)
        super().__init__(f"Invalid setting {name}={shown}: expected {allowed}.")


class CredentialsConflict(BastionError):
    """A request that carries two kinds of credential; Bastion will not pick one silently.

    Raised as such for a kind of the app's own (``Bastion(credentials=...)``); the built-in
    pairs have their own ``type`` below.
    """

    status = 403
    type = "user_credentials_conflict"
    default_message = "Send one kind of credential, not several."


class JWTAndSession(CredentialsConflict):
    """A JWT sent together with a session cookie or session header."""

    type = "user_jwt_and_cookie_set"
    default_message = "Send either a JWT or a session, not both."


class APIKeyAndSession(CredentialsConflict):
    """An API key sent together with a session or a JWT."""

    type = "user_api_key_and_session_set"
    default_message = "Send either an API key or a user credential (session or JWT), not both."


class CredentialInvalid(Unauthorized):
    """A credential of a kind the app registered that its backend did not accept."""

    type = "user_credential_invalid"
    default_message = "The credential is invalid."


class JWTInvalid(Unauthorized):
    """A JWT that is malformed, forged, expired, not for us, or whose session has ended."""

    type = "user_jwt_invalid"
    default_message = "Failed to verify JWT."


class JWTCreationDenied(BastionError):
    """A JWT asked for by a request that is not authenticated by a session."""

    status = 403
    type = "user_jwt_creation_denied"
    default_message = "A JWT can only be made from a session, not from another JWT or an API key."


class JWTDisabled(BastionError):
    """A JWT asked for on a server with no JWT key: the feature is switched off, not broken.

    501, not 400: nothing in the request is wrong and no other request would do better; the
    server does not offer the function (RFC 9110 15.6.2). Not 503 either: that says "try again
    later", and common retry policies would, in vain.
    """

    status = 501
    type = "general_jwt_disabled"
    default_message = "JWTs are disabled on this server: it has no JWT key configured."


class APIKeyInvalid(Unauthorized):
    """An API key that is malformed, unknown, revoked or has the wrong secret."""

    type = "api_key_invalid"
    default_message = "The API key is invalid or has been revoked."


class APIKeyExpired(Unauthorized):
    """An API key past its expiry date."""

    type = "api_key_expired"
    default_message = "The API key has expired."


class MissingScope(Unauthorized):
    """An API key without the scope the route requires."""

    type = "general_unauthorized_scope"

    def __init__(self, scope: str, who: str = "API key") -> None:
        self.scope = scope
        super().__init__(f"{who} is missing the scope {scope!r} that this route requires.")


class Forbidden(BastionError):
    """A signed-in caller whom the permissions do not allow this action on this resource."""

    status = 403
    type = "general_access_forbidden"
    default_message = "The current user is not allowed to perform this action on this resource."


class UserUnverified(BastionError):
    """A signed-in user whose email is not verified, on a route for verified users only.

    403, not 401: the caller is known and logging in again would not help; verifying would.
    """

    status = 403
    type = "user_email_not_verified"
    default_message = "Verify your email address first: this route is for verified users only."


class NotFound(BastionError):
    """A denied read on a route that hides whether the resource exists."""

    status = 404
    type = "general_not_found"
    default_message = "The requested resource could not be found."


class ServerError(BastionError):
    """An unexpected failure (a bug, an app's hook that crashed): 500, details only in the log."""

    status = 500
    type = "general_server_error"
    default_message = "Server error."


class PasswordRejected(BastionError):
    """A new password that a password rule refuses; subclass it for a check of your own.

    A subclass sets its own ``type`` (``password_breached``) and ``default_message``; the status
    stays 400. Raised as is, it answers ``password_rejected``.
    """

    status = 400
    type = "password_rejected"
    default_message = "This password cannot be used. Choose another one."


class PasswordTooShort(PasswordRejected):
    """Fewer characters than ``password_min_length``."""

    type = "password_too_short"
    default_message = "The password is too short."


class PasswordTooLong(PasswordRejected):
    """More characters than ``password_max_length``."""

    type = "password_too_long"
    default_message = "The password is too long."


class PasswordInDictionary(PasswordRejected):
    """One of the most common passwords."""

    type = "password_in_dictionary"
    default_message = (
        "This password is one of the most commonly used passwords. Choose a less common one; "
        "a few unrelated words make a strong password."
    )


class PasswordPersonalData(PasswordRejected):
    """A password that contains the user's own id, email, name or phone number."""

    type = "password_personal_data"
    default_message = (
        "The password must not contain your name, email address, phone number or user id."
    )


class PasswordContextWord(PasswordRejected):
    """A password that contains one of ``password_context_words`` (the site's or product's name).

    Its own type rather than ``password_personal_data``: the words are the deployment's, not the
    user's, so that message would mislead, and the rule has its own switch (an empty list).
    """

    type = "password_context_word"
    default_message = (
        "The password must not contain the name of this site, product or organisation."
    )


class PasswordRecentlyUsed(PasswordRejected):
    """A password among the user's last ``password_history`` passwords."""

    type = "password_recently_used"
    default_message = "You used this password recently. Choose one you have not used before."


class InvalidCredentials(Unauthorized):
    """Unknown email or wrong password: the same answer for both, after the same work."""

    type = "user_invalid_credentials"
    default_message = "Invalid credentials. Check the email and password."


class UserBlocked(Unauthorized):
    """A log-in (or a new session) for a user an administrator has disabled."""

    type = "user_blocked"
    default_message = "This user is blocked."


class UserNotFound(BastionError):
    """An administrative call (disable, enable, delete, update) for a user that does not exist."""

    status = 404
    type = "user_not_found"
    default_message = "No user with this id exists."


class UserAlreadyExists(BastionError):
    """Sign-up with an email that has an account already."""

    status = 409
    type = "user_already_exists"
    default_message = "A user with the same email already exists."


class RateLimited(BastionError):
    """Too many attempts; ``Retry-After`` says when to try again."""

    status = 429
    type = "general_rate_limit_exceeded"
    default_message = "Rate limit for the current endpoint has been exceeded. Try again later."


class SessionLimitInvalid(BastionError):
    """A session limit outside 1..100."""

    status = 400
    type = "session_limit_invalid"
    default_message = "The session limit must be between 1 and 100."


class ReauthenticationRequired(BastionError):
    """Ending other sessions needs the password again (or a session younger than the window)."""

    status = 403
    type = "user_reauthentication_required"
    default_message = (
        'Confirm your password to end your other sessions: send it as {"password": ...}.'
    )
