"""A minimal Django project that runs django-post_office for bench/throughput.py --peers."""
