from rest_framework.pagination import LimitOffsetPagination


class Pages(LimitOffsetPagination):
    """`limit` and `offset` paging; a limit above 200 counts as 200, so none overflows the database."""

    max_limit = 200
