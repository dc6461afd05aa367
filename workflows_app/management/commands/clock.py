import signal

from django.core.management.base import BaseCommand

from workflows_app.clock import clock_loop


class Command(BaseCommand):
    help = "Run the clock: hand due executions (timers, new and resumed runs) to the workers."

    def add_arguments(self, parser):
        parser.add_argument("--seconds", type=float, default=None, help="Stop after this long.")

    def handle(self, *args, seconds=None, **options):
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        self.stdout.write("clock started")
        try:
            clock_loop(stop_after=seconds)
        except KeyboardInterrupt:
            self.stdout.write("clock stopped")
