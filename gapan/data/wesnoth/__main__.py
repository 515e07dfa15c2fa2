"""`python -m gapan.data.wesnoth`: prepare the embedded data set's cache."""

from gapan.data.wesnoth import main

if __name__ == "__main__":
    main()
