"""The one exception type for problems a user can fix."""


class UserError(Exception):
    """A mistake the user can correct; the message says what is wrong and how to fix it.

    Edges turn it into an ephemeral Discord reply or one stderr line. Anything else that escapes
    is a bug, logged with its job id and reported without details.
    """
