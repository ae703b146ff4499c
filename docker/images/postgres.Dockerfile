# PostgreSQL from Debian (15 on bookworm), started as the official postgres/timescaledb images are:
# POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB create the role and database on first start, data in
# /var/lib/postgresql/data. TimescaleDB is not packaged by Debian: this image has plain PostgreSQL
# (`wattproof db upgrade` enables TimescaleDB features only when the extension is present).
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/postgresql/data /run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /run/postgresql
COPY docker/images/postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
USER postgres
EXPOSE 5432
ENTRYPOINT ["sh", "/usr/local/bin/postgres-entrypoint.sh"]
CMD ["postgres"]
