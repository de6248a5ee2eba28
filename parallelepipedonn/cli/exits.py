"""The command line's exit codes, and what each failure of a command exits with.

Exit codes: 0 the command ran (whatever the certification status, or ``verify``'s answer:
unsat, sat, unknown or timeout); 1 internal error;
2 bad input or usage (unreadable/unsupported model, malformed input, unknown option
value); 4 an output file cannot be written; 130 interrupted. ``recheck`` also: 3 the
model file's sha256 differs from the certificate's; 5 refuted; 6 undecided. 141 broken
pipe. The table users see is ``EXIT_CODES`` (``--help``). The library raises typed
exceptions (:class:`~parallelepipedonn.errors.ParallelepipedoNNError`, each with its
``exit_code``); only the command line turns them into exit codes (:func:`run_command`).
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import ParallelepipedoNNError

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_OUTPUT, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 0, 1, 2, 4, 130, 141
EXIT_REFUTED, EXIT_UNDECIDED = 5, 6  # recheck (3, a model hash mismatch: ModelMismatchError.exit_code)


EXIT_CODES = """exit codes:
  0    the command ran (a certificate's status says what was proven: certified,
       not-robust or unknown; verify's answer: unsat, sat, unknown or timeout; a
       batch: every input or instance has a result in the store)
  1    internal error (also: an input of a batch hit one)
  2    bad model, input or usage: unreadable, empty, malformed or unsupported model,
       not a classifier, wrong input size, NaN/inf or values outside the domain,
       label out of range, unknown option value; a malformed VNN-LIB file, one over
       the wrong number of inputs or outputs, an input box outside the domain or
       empty (the message names the file and line; nothing is written) (a batch: an
       input or instance could not be read)
  3    recheck: the model file's sha256 differs from the one recorded (or, for a
       verify result, the property file's)
  4    an output file (--json, --plot, --store) cannot be written
  5, 6 recheck: refuted, undecided
  130  interrupted (a batch keeps every result committed so far)
  141  standard output closed early (broken pipe)"""


def one_line(text: str) -> str:
    return " ".join(text.split())


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed command (``args.func``) under the thread policy; what it raises becomes
    an exit code and a one-line message on standard error."""
    try:
        from ..threads import configure_threads, resolve_threads

        resolve_threads(args.threads)  # a bad $PARALLELEPIPEDONN_THREADS is an error for every command
        if not getattr(args, "torch_free", False):  # the thread policy, before any torch work
            configure_threads(args.threads)
        return int(args.func(args))
    except ParallelepipedoNNError as exc:
        print(f"parallelepipedonn: error: {one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("parallelepipedonn: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # stdout closed early (e.g. piped into head): as if killed by SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as exc:  # report, never a silent wrong result
        if args.verbose >= 2:
            raise
        print(f"parallelepipedonn: internal error: {type(exc).__name__}: {one_line(str(exc))} "
              "(run with -vv for a traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL
