import signal

from django.core.management.base import BaseCommand

from workflows_app.clock import clock_loop
from workflows_app.shutdown import say


class Command(BaseCommand):
    help = "Run the clock: hand due executions (timers, new and resumed runs) to the workers."

    def add_arguments(self, parser):
        parser.add_argument("--seconds", type=float, default=None, help="Stop after this long.")

    def handle(self, *args, seconds=None, **options):
        # SIGTERM or SIGINT (once or many times, to this process or its whole group) ends the
        # loop after the iteration in hand: nothing is raised in the middle of a transaction.
        received: list[str] = []

        def on_signal(signum, frame):
            received.append(signal.Signals(signum).name)

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        # A stdout whose reader has gone (say ignores the failed write) does not stop the clock.
        say(self.stdout, "clock started")
        clock_loop(stop_after=seconds, stopping=lambda: bool(received))
        say(self.stdout, f"clock stopped ({received[0]})" if received else "clock stopped")
