# shellcheck shell=bash
# nginx as the peer of the registry benchmarks. Source it, then
#   nginx_static DIR PORT      serve DIR's files on 127.0.0.1:PORT (2 workers,
#                              sendfile, no access log); sets NGINX_PID
# Its config, pid and temp files go under DIR/../nginx-run.
nginx_static() {
  local www=$1 port=$2 run
  run="$(dirname "$www")/nginx-run"
  mkdir -p "$run"
  cat > "$run/nginx.conf" <<CONF
worker_processes 2;
daemon off;
pid $run/nginx.pid;
error_log $run/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on; tcp_nopush on;
  client_body_temp_path $run; proxy_temp_path $run; fastcgi_temp_path $run; uwsgi_temp_path $run; scgi_temp_path $run;
  server { listen 127.0.0.1:$port; root $www; }
}
CONF
  nginx -c "$run/nginx.conf" -p "$run" &
  NGINX_PID=$!
  local _
  for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && return 0; sleep 0.1; done
  echo "nginx: not listening on $port" >&2; return 1
}
