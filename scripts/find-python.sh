#!/usr/bin/env bash
# Prints the path of a Python >= 3.12 (3.13 preferred), looking on PATH and under pyenv.
for candidate in python3.13 python3.12; do
  if path=$(command -v "$candidate" 2>/dev/null) && "$path" -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null; then
    echo "$path"; exit 0
  fi
done
for root in "${PYENV_ROOT:-$HOME/.pyenv}" /root/.pyenv /usr/local/pyenv; do
  for path in $(ls -d "$root"/versions/3.13*/bin/python3 "$root"/versions/3.12*/bin/python3 2>/dev/null | sort -rV); do
    "$path" -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null && { echo "$path"; exit 0; }
  done
done
if path=$(command -v python3 2>/dev/null) && "$path" -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null; then
  echo "$path"; exit 0
fi
echo "No Python 3.12+ found. Install Python 3.13 (e.g. 'pyenv install 3.13') and retry." >&2
exit 1
