#!/bin/sh
# Run once by the postgres image's entrypoint when the data volume is first made (as
# POSTGRES_USER, the cluster's superuser): the owner that migrates, the app's login role
# in coalition_app, and the database (roles.psql says why each is what it is).
set -eu
psql --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v owner_role=coalition_owner \
    -v owner_password="$COALITION_OWNER_PASSWORD" \
    -v login_role=coalition_service \
    -v login_password="$COALITION_SERVICE_PASSWORD" \
    -v database=coalition \
    -f /docker-entrypoint-initdb.d/roles.psql
